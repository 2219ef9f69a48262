"""A `make demo` section's runs, from the method registry: each method's ``demo`` hook says which runs
it adds to a section (``methods.reproduce.DemoContext``), so the demo's code names no method and an
outside method with a hook joins the demo as the built-in ones do."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..methods import FAMILIES, METHODS
from ..methods.reproduce import DemoContext
from ..vocabulary import DEFAULT_METHOD
from .spec import RunSpec


def section_runs(family: str, thresholds: str, levels: Sequence[str], main: bool, prefix: str = "",
                 extra: Mapping[str, str] | None = None) -> list[RunSpec]:
    """The runs every registered method adds to the ``family`` section, in table order: labels get
    ``prefix``, model_args ``extra`` (the section's own, e.g. frames per clip). A method without model
    names of its own (the baseline) runs through ``dymu_<family suffix>``."""
    context = DemoContext(family, thresholds, tuple(levels), main)
    suffix = FAMILIES[family].suffix
    runs = []
    for name, spec in METHODS.items():
        if spec.demo is None:
            continue
        model = f"{name if spec.model_name else DEFAULT_METHOD}_{suffix}"
        runs += [RunSpec(prefix + run.name, model, {"method": name, **run.args, **(extra or {})}, run.needs)
                 for run in spec.demo(context)]
    return runs

"""The method and family registries: one spec per reduction method and per model family.

Modelled on transformers' ``AttentionInterface``: a dict-like registry with ``register(name, spec)``.
Built-in methods register from their own file in this package; outside packages register through
the entry-point groups ``dymu_eval.methods`` and ``dymu_eval.families`` (each entry point names a
module, or a callable taking the registry), loaded the first time a registry is read. Parsers,
stats, labels, reproduce matrices and lmms-eval model names are all derived from here, so no
module but a method's own file names a method.

Torch-free on purpose: ``report/`` labels runs with these specs, and a spec's builder is a
``"module:function"`` string imported only when a model is built.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from ..errors import ConfigError

METHOD_ENTRY_POINTS = "dymu_eval.methods"
FAMILY_ENTRY_POINTS = "dymu_eval.families"

# What a family offers a method (a method lists what it needs in MethodSpec.needs).
FEATURES = ("merge", "select", "prune", "vtu")


@dataclass(frozen=True)
class Arg:
    """One model_arg of a method: its default (None: unset), a parser ``(name, raw) -> value`` that
    raises ConfigError naming the argument, and a one-line help."""

    default: Any
    parse: Callable[[str, Any], Any]
    help: str


@dataclass(frozen=True)
class MethodSpec:
    """A reduction method.

    ``build`` is ``"module:function"`` (or the function): ``build(context, values) -> Reduction``,
    where ``context`` is a ``vlm.reduction.BuildContext`` and ``values`` the typed model_args.
    ``check(given, values)`` applies rules that span arguments (it may fill ``values``) before
    anything loads. ``amount(values)`` is the run's "level" column from its model_args as strings
    (defaults filled in); ``display(amount)`` how a label writes it (default: ``-low`` for a level,
    `` <amount>`` otherwise). ``needs``: family features the method uses (``FEATURES``).
    ``summary`` says in one line what the method is and which arguments set its amount; it is
    what a refusal of a foreign argument quotes.
    """

    label: str
    summary: str
    build: str | Callable[..., Any]
    args: Mapping[str, Arg] = field(default_factory=dict)
    check: Callable[[dict[str, Any], dict[str, Any]], None] | None = None
    amount: Callable[[Mapping[str, str]], str] | None = None
    display: Callable[[str], str] | None = None
    needs: frozenset[str] = frozenset()
    level_args: tuple[str, ...] = ()  # args recorded as the run's level (ToMe/DyMU: level or r)
    reproduce: Callable[[Any], list[Any]] | None = None  # its rows of `make reproduce` (runs.reproduce)
    demo: Callable[[Any], list[Any]] | None = None  # its runs in each `make demo` section (runs.demo_plan)
    baseline: bool = False  # a fixed-budget baseline: `reproduce --baselines` chooses among these
    aliases: tuple[str, ...] = ()  # other names files may use for it (``dymu-eval tokens`` writes dtome)
    table_order: int = 100  # where tables list the method's rows (baseline 0; built-ins 10..60; ties: by name)
    threshold_arg: str | None = None  # the argument naming calibration data (a table column)
    model_name: bool = True  # gets its own lmms-eval model names (<name>_llava, <name>_llava_onevision, ...)
    # budget= (methods.budget): BudgetTarget -> the method's own model_args as strings; setting it adds the arg
    budget: Callable[[Any], Mapping[str, str]] | None = None

    def __post_init__(self) -> None:
        if self.budget is not None and "budget" not in self.args:
            from . import parse
            from .budget import BUDGET_HELP

            object.__setattr__(self, "args", {**self.args, "budget": Arg(None, parse.count_or_fraction, BUDGET_HELP)})

    def builder(self) -> Callable[..., Any]:
        """The build function, imported on first use."""
        return resolve(self.build)

    @property
    def vtu_default(self) -> bool | None:
        """The default of the method's ``vtu`` switch, None when it has none."""
        arg = self.args.get("vtu")
        return None if arg is None else bool(arg.default)


@dataclass(frozen=True)
class FamilySpec:
    """A model family: the checkpoints' ``model_type`` values it serves, the lmms-eval model-name
    suffix (``llava``, ``llava_onevision``), its default checkpoint, the family-only model_args, the
    features it offers methods, and its module, which provides

    - ``load_pipeline(pretrained, device_map, dtype, attn_implementation, family_args) -> pipeline``
      (a ``vlm.pipeline.PipelineBase``);
    - ``simple_request(pipe, context, visuals, name, continuation, family_args) -> (request, full text)``:
      lmms-eval's simple path (``visuals`` as its ``doc_to_visual`` returns them);
    - ``chat_request(pipe, messages, name, family_args) -> request``: the chat path (lmms-eval's
      ``ChatMessages``).
    """

    model_types: tuple[str, ...]
    suffix: str
    default_checkpoint: str
    module: str
    args: Mapping[str, Arg] = field(default_factory=dict)
    features: frozenset[str] = frozenset(FEATURES)
    title: str = ""  # its name in messages (LLaVA-OneVision)
    encoder_call: str = "per_image"  # how its reference calls the encoder (merge.Threshold ``call``)

    def function(self, name: str) -> Callable[..., Any]:
        """One of the module's functions (imported on first use)."""
        return resolve(f"{self.module}:{name}")


def resolve(target: str | Callable[..., Any]) -> Callable[..., Any]:
    """``"package.module:attr"`` -> the attribute (imported now); a callable passes through."""
    if callable(target):
        return target
    module, _, attr = str(target).partition(":")
    if not module or not attr:
        raise ConfigError(f"{target!r} is not 'module:attribute'")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import {target}: {exc}") from exc


class Registry(Mapping[str, Any]):
    """Name -> spec. Iterates in ``order`` (name, spec) -> key, else in registration order. Entry
    points of ``group`` and the built-in modules ``builtins`` load lazily, on the first read."""

    def __init__(self, kind: str, group: str, builtins: tuple[str, ...] | str,
                 order: Callable[[str, Any], Any] | None = None):
        """``builtins``: modules to import first, or a package whose every module is imported."""
        self.kind = kind
        self.group = group
        self._builtins = builtins
        self._order = order
        self._specs: dict[str, Any] = {}
        self._loaded = False
        self._loading = False

    def register(self, name: str, spec: Any, *, replace: bool = False) -> None:
        """Add ``spec`` under ``name``; registering a taken name needs ``replace=True``."""
        if not name or not name.replace("_", "").isalnum() or name != name.lower():
            raise ConfigError(f"{self.kind} name {name!r}: use lower-case letters, digits and underscores")
        if name in self._specs and not replace and self._specs[name] is not spec:
            raise ConfigError(f"{self.kind} {name!r} is already registered (pass replace=True to override it)")
        self._specs[name] = spec

    def unregister(self, name: str) -> None:
        self._specs.pop(name, None)

    def _load(self) -> None:
        if self._loaded or self._loading:
            return
        self._loading = True
        try:
            for module in _modules(self._builtins):
                importlib.import_module(module)
            for ep in metadata.entry_points(group=self.group):
                try:
                    target = ep.load()
                except Exception as exc:  # an outside package's import error, named in one line
                    raise ConfigError(f"entry point {ep.name} = {ep.value} ({self.group}) failed to load: "
                                      f"{type(exc).__name__}: {exc}") from exc
                if callable(target):
                    target(self)
            self._loaded = True
        finally:
            self._loading = False

    def __getitem__(self, name: str) -> Any:
        self._load()
        try:
            return self._specs[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self._specs)}") from None

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._specs

    def __iter__(self) -> Iterator[str]:
        self._load()
        names = list(self._specs)
        if self._order is not None:
            names.sort(key=lambda n: self._order(n, self._specs[n]))
        return iter(names)

    def __len__(self) -> int:
        self._load()
        return len(self._specs)


def _modules(builtins: tuple[str, ...] | str) -> list[str]:
    if not isinstance(builtins, str):
        return list(builtins)
    package = importlib.import_module(builtins)
    return [f"{builtins}.{m.name}" for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_")]


# methods iterate in table order (the baseline first), then by name
METHODS = Registry("method", METHOD_ENTRY_POINTS, "dymu_eval.methods.builtin",
                   order=lambda name, spec: (spec.table_order, name))
# every module of dymu_eval.vlm is imported; the family modules among them register themselves
FAMILIES = Registry("family", FAMILY_ENTRY_POINTS, "dymu_eval.vlm")

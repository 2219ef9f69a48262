"""What a method's ``reproduce`` hook receives and returns: the family's matrix context and the
runs (name, model_args, threshold entries needed). ``runs.reproduce`` turns them into lmms-eval
commands; the paper's per-method settings stay in each method's file. Torch-free."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MatrixContext:
    """``family``: ``llava`` (LLaVA-1.5, the paper's Tables 2/5/6/7), ``onevision`` (Table 4) or ``next``
    (LLaVA-NeXT-7B, the peer papers' second model: 576 patches per crop, budgets 128/64/32 per crop =
    640/320/160 over 5 crops); ``levels``: the levels asked for; ``tome_r``: ToMe's merges per layer
    at each level for the family's encoder; ``patches``: patch tokens per image (crop, frame) of the family's tower;
    ``budget_counts``: the fixed-budget methods' ``budget=`` values per image (crop, frame), by
    default LLaVA-1.5's 192/128/64 at the same fractions of ``patches``."""

    family: str
    levels: tuple[str, ...]
    tome_r: dict[str, int]
    patches: int
    budget_counts: tuple[int, ...] = ()

    @property
    def paper(self) -> bool:
        """The LLaVA-1.5 matrix, with the ablations of Tables 5-7."""
        return self.family == "llava"

    @property
    def budgets(self) -> tuple[int, ...]:
        """The per-image budgets fixed-budget methods run at in this family's matrix."""
        from .budget import PAPER_BUDGETS

        return self.budget_counts or tuple(self.scaled(b) for b in PAPER_BUDGETS)

    def budget_runs(self, name: str) -> list[MatrixRun]:
        """One run of method ``name`` per budget (``<name>_b<count>``, model_args ``budget=<count>``)."""
        return [MatrixRun(f"{name}_b{b}", {"budget": str(b)}) for b in self.budgets]

    def scaled(self, tokens: int) -> int:
        """LLaVA-1.5's per-image budget (of 576 patches) at the same fraction of this family's patches."""
        return self.patches * tokens // 576


@dataclass(frozen=True)
class DemoContext:
    """What a method's ``demo`` hook receives: the demo section's family (a ``FAMILIES`` name), the
    calibration dataset its threshold runs read, the levels that section calibrated, ``main`` (the
    LLaVA-1.5 section, which runs every level of every method; the others run a few) and the one
    level a side section runs a level-set method at. The hook returns the method's runs there
    (``MatrixRun``: the label without the section's prefix, the model_args) or none."""

    family: str
    thresholds: str
    levels: tuple[str, ...]
    main: bool
    side_level: str = "mid"

    @property
    def run_levels(self) -> tuple[str, ...]:
        """Every calibrated level in the main section, ``side_level`` in the others."""
        return self.levels if self.main else (self.side_level,)


@dataclass(frozen=True)
class MatrixRun:
    """One run: its folder name, its model_args (strings), and the threshold entries it needs
    (calibration dataset, level, schedule)."""

    name: str
    args: dict[str, str]
    needs: tuple[tuple[str, str, str], ...] = field(default_factory=tuple)

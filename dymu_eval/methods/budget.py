"""``budget=``: one visual-token budget for every fixed-budget method, mapped by each method's own
``MethodSpec.budget`` hook to its published settings.

The papers compare LLaVA-1.5 methods at 192/128/64 visual tokens per image, but each method reaches
that number with its own knobs (DART keeps 0.667/192, VisionZip 162+30, FastV prunes after layer 2 so
that the layer average is 192, ...). A count names such a budget: tokens per image (crop, frame), with
the published setting where the method has one. A fraction (``budget=0.25``) scales to the model at
hand: that fraction of its patch tokens per image. Arguments a user sets explicitly override what the
budget implies. Torch-free (``report/`` reads these).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

PAPER_BUDGETS = (192, 128, 64)  # LLaVA-1.5 visual tokens per image in the peer tables (of 576)
PAPER_PATCHES = 576  # LLaVA-1.5's patches per image: a budget is read against it before a model loads
PAPER_LAYERS = 32  # the 7B decoders' depth, likewise


@dataclass(frozen=True)
class Budget:
    """A budget as given: ``value`` a count of visual tokens per image (int) or a fraction of the
    model's patch tokens in (0, 1] (float); ``given`` the method arguments set explicitly beside it."""

    value: int | float
    given: frozenset[str] = frozenset()

    @property
    def is_fraction(self) -> bool:
        return isinstance(self.value, float)

    def __str__(self) -> str:
        if not self.is_fraction:
            return str(self.value)
        text = f"{self.value:.6g}"
        return text if "." in text or "e" in text else f"{text}.0"


@dataclass(frozen=True)
class BudgetTarget:
    """What a method's budget hook reads: the budget and the model it applies to (``patches`` per
    image, crop or frame; ``decoder_layers``). Before a model loads both are None and the hook sees
    LLaVA-1.5-7B's (576, 32)."""

    budget: Budget
    model_patches: int | None = None
    model_layers: int | None = None

    @property
    def patches(self) -> int:
        return self.model_patches or PAPER_PATCHES

    @property
    def decoder_layers(self) -> int:
        return self.model_layers or PAPER_LAYERS

    @property
    def tokens(self) -> int:
        """Visual tokens per image the budget asks for (at least 1)."""
        value = self.budget.value
        return max(1, round(value * self.patches)) if self.budget.is_fraction else int(value)

    @property
    def fraction(self) -> float:
        """The budget as a fraction of the patch tokens per image."""
        return self.tokens / self.patches

    @property
    def paper(self) -> int | None:
        """192, 128 or 64 when the budget is that count (a method's published setting applies), else None."""
        value = self.budget.value
        return value if not self.budget.is_fraction and value in PAPER_BUDGETS else None

    def check(self) -> None:
        """A count above the model's patch tokens names the budget (only once the model is known)."""
        if self.model_patches is not None and self.tokens > self.model_patches:
            raise ConfigError(f"budget={self.budget}: above the {self.model_patches} visual tokens per image "
                              "(crop, frame) of this model; give a smaller count or a fraction in (0, 1]")


BUDGET_HELP = ("visual tokens per image: 192 | 128 | 64 (the LLaVA-1.5 budgets of the peer tables, mapped to the "
               "method's published settings), another count, or a fraction of the patch tokens (0.25); the "
               "method's own arguments override it")


def apply_budget(spec: Any, values: dict[str, Any], patches: int | None = None,
                 decoder_layers: int | None = None) -> dict[str, Any]:
    """``values`` with the arguments ``values["budget"]`` implies for ``spec`` (those not set explicitly),
    for a model with ``patches`` per image and ``decoder_layers`` (None: not loaded yet)."""
    budget = values.get("budget")
    if budget is None or spec.budget is None:
        return values
    target = BudgetTarget(budget, patches, decoder_layers)
    target.check()
    derived: Mapping[str, str] = spec.budget(target)
    unknown = sorted(set(derived) - set(spec.args))
    if unknown:
        raise ConfigError(f"method {spec.label}: its budget hook sets {', '.join(unknown)}, which it does not accept")
    out = dict(values)
    for name, raw in derived.items():
        if name not in budget.given:
            out[name] = spec.args[name].parse(name, raw)
    return out


def budget_values(spec: Any, given: Mapping[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (typed, defaults filled) with a parsed ``budget`` turned into a :class:`Budget` and the
    arguments it implies filled in, read against LLaVA-1.5-7B's shape (the model is not loaded yet)."""
    if values.get("budget") is None:
        return values
    explicit = frozenset(n for n in given if n in spec.args and n != "budget")
    return apply_budget(spec, {**values, "budget": Budget(values["budget"], explicit)})


def recorded_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A method's resolved settings as a stats row records them: a budget as its text, and the
    arguments set beside it (which overrode it) as ``budget_overrides``."""
    out = dict(settings)
    budget = out.get("budget")
    if isinstance(budget, Budget):
        out["budget"] = str(budget)
        out["budget_overrides"] = ",".join(sorted(budget.given)) or None
    return out

"""What the family modules run for a reduction method: a merge policy for the encoder, a selection
after it, VTU on/off, and a pruner inside the LLM. Each method's file (``dymu_eval.methods``)
builds one from its model_args and a :class:`BuildContext`; this module names no method.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import nn

from ..errors import ConfigError
from ..language.pruning import Pruner
from ..merge import NoMerge, Policy
from ..merge.select import Selector
from ..methods import FAMILIES, METHODS
from ..methods.budget import apply_budget
from ..prepack import check_prepack, prepack_linears
from ..vision import VisionRunner
from ..vocabulary import BASELINE

if TYPE_CHECKING:
    from ..lmms.args import ModelArgs


@dataclass
class Reduction:
    """What to do to the visual tokens: a merge policy in the encoder, a selection after it, VTU
    or not, a pruner in the LLM or not. ``original_positions``: without VTU, kept rows sit at the
    positions their patches had in the unmodified sequence (gaps where tokens were dropped), instead
    of consecutive positions."""

    method: str = BASELINE  # a name in methods.METHODS
    policy: Policy = field(default_factory=NoMerge)
    selector: Selector | None = None
    original_positions: bool = False
    vtu: bool = False
    pruner: Pruner | None = None
    r_per_layer: list[int] | None = None  # ToMe / DyMU gate (what the layer schedule allows)
    thresholds_key: str | None = None  # the cache entry DyMU used
    settings: dict[str, Any] = field(default_factory=dict)  # the method's model_args as resolved for this model


@dataclass
class BuildContext:
    """What a method's builder may read: the loaded model, its reduced-tower runner, the names its
    checkpoint goes by in the threshold cache (checkpoint first, then the encoder's key), how the
    family calls its encoder (merge.Threshold ``call``), and the decoder's depth."""

    model: nn.Module
    runner: VisionRunner
    names: list[str]
    encoder_call: str
    decoder_layers: int | None  # None: not known (a pruner's cuts are then checked when it runs)
    features: frozenset[str] = frozenset()


def build_reduction(method: str, values: dict[str, Any], context: BuildContext) -> Reduction:
    """The method's Reduction, checked against what the family offers it."""
    spec = METHODS[method]
    missing = sorted(set(spec.needs) - set(context.features)) if context.features else []
    if missing:
        raise ConfigError(f"method={method} needs {', '.join(missing)}, which this model family does not offer")
    if values.get("budget") is not None:
        patches = context.runner.num_patches() if context.runner is not None else None
        values = apply_budget(spec, values, patches, context.decoder_layers)
    reduction = spec.builder()(context, values)
    if not isinstance(reduction, Reduction):
        raise ConfigError(f"method={method}: its builder returned {type(reduction).__name__}, not a Reduction")
    if reduction.pruner is not None and context.decoder_layers is not None:
        reduction.pruner.check(context.decoder_layers)
    reduction.method = method
    reduction.settings = {k: v for k, v in values.items() if k != "level"}
    return reduction


def reduction_for(pipe: Any, method: str, **model_args: Any) -> Reduction:
    """The Reduction ``method`` builds for a loaded pipeline from model_args as lmms-eval would pass
    them (``reduction_for(pipe, name, r=8)``); the Python API and the tests use it."""
    from ..methods.settings import resolve_method_args

    values = resolve_method_args(method, {k: v for k, v in model_args.items() if v is not None})
    return build_reduction(method, values, pipe.build_context())


def load_reduced(args: ModelArgs, device_map: str) -> Any:
    """The family's pipeline for resolved model_args, its Linear layers packed when ``cpu_prepack``
    asks (device and dtype checked before anything loads), with the method's Reduction in place:
    the one loading sequence lmms-eval's model and the Python API share."""
    if args.cpu_prepack:
        check_prepack(device_map, args.dtype)
    load_pipeline = FAMILIES[args.family].function("load_pipeline")
    pipe = load_pipeline(args.pretrained, device_map, args.dtype, args.attn_implementation, args.family_args)
    if args.cpu_prepack:
        prepack_linears(pipe.model)
    pipe.reduction = build_reduction(args.method, {**args.method_args, "level": args.level}, pipe.build_context())
    return pipe

"""The names dymu-eval speaks in, defined once: reduction methods, levels, schedules, dtypes, the
lmms-eval model names with their default model_args, and the FastV bounds.

Torch-free on purpose, so that every layer may import it: ``lmms/`` validates model_args with it,
``merge/``, ``language/`` and ``vlm/`` check their inputs against it, ``report/`` labels runs with
it and the CLI offers its names as ``choices``.

Adding a method (say ``divprune``) adds lines here in three places:

1. its name to ``METHODS``;
2. a :class:`MethodSpec` in ``METHOD_SPECS``: the method-specific model_args it accepts with their
   defaults, and how tables name it;
3. (if it has an lmms-eval model of its own) a line in ``MODEL_DEFAULTS``.

``lmms/args.py`` then accepts and types its model_args; the algorithm itself goes in
``vlm/reduction.py`` (the policy it builds) and ``lmms/model.py`` (which builder a method uses).
A new model family adds its lmms-eval model names to ``MODEL_DEFAULTS`` with its default checkpoint.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

# --- reduction methods -------------------------------------------------------------------------
BASELINE = "none"  # the method (and the level) that reduces nothing
METHODS = ("dymu", "tome", "fastv", "random", "pool", "visionzip", BASELINE)
SELECTION_METHODS = ("random", "pool", "visionzip")  # fixed budgets chosen from the encoder's output

# --- levels and schedules ----------------------------------------------------------------------
LEVELS = ("low", "mid", "high")  # the paper's reduction levels, least reduction first
LEVEL_CHOICES = (*LEVELS, BASELINE)  # model_args ``level=`` also takes ``none``, the unreduced baseline
DEFAULT_LEVEL = "low"  # DyMU's level when neither level= nor r= is given (also calibrate's default)
CUSTOM_LEVEL = "custom"  # what a run given r= (instead of a level) records as its level
SCHEDULES = ("constant", "linear", "reverse_linear")  # merges per layer over depth
DEFAULT_SCHEDULE = "constant"

# --- token order after a merge (merge/order.py) --------------------------------------------------
MERGE_ORDERS = ("reference", "position")  # the official code's [CLS, unmerged A, all B] / original position
DEFAULT_MERGE_ORDER = "reference"
ENCODER_CALLS = ("per_image", "batched")  # how a family's reference calls its encoder (merge.Threshold)

# --- dtypes -------------------------------------------------------------------------------------
DTYPES = ("float32", "float16", "bfloat16", "float64")  # torch dtype names (float64: exactness checks)
AUTO_DTYPE = "auto"  # the checkpoint's dtype on GPU, float32 on CPU

# --- threshold data and checkpoints -------------------------------------------------------------
DEFAULT_THRESHOLDS = "llava_instruct"  # the calibration set of the paper's main results
LLAVA_15 = "llava-hf/llava-1.5-7b-hf"
ONEVISION_7B = "llava-hf/llava-onevision-qwen2-7b-ov-hf"

# --- LLaVA-OneVision ------------------------------------------------------------------------------
MAX_FRAMES = 32  # frames sampled per video, as lmms-eval's own OneVision models default to
LAYOUTS = ("stock", "official")  # the unmodified model's sequence | the DyMU code's
# several images of a request: each its own AnyRes crops (as lmms-eval's llava_hf passes them) |
# one crop and one newline each (transformers' and the reference OneVision's multi-image mode)
MULTI_IMAGE_MODES = ("anyres", "single")

# --- FastV ----------------------------------------------------------------------------------------
FASTV_K = 2  # FastV paper's main setting: prune after decoder layer 2 ...
FASTV_RATIO = 0.5  # ... dropping half of the image tokens

# --- fixed-budget baselines ------------------------------------------------------------------------
RANDOM_KEEP = 0.25  # random: the fraction (or count) of patch tokens kept per image
POOL_FACTOR = 2  # pool: 2x2 patches per token (LLaVA-1.5: 576 -> 144)
# VisionZip's LLaVA-1.5 settings, dominant + contextual tokens (the CLS token counts as dominant):
VISIONZIP_SETTINGS = ((162, 30), (108, 20), (54, 10))  # 192 / 128 / 64 tokens
VISIONZIP_DOMINANT, VISIONZIP_CONTEXTUAL = VISIONZIP_SETTINGS[-1]  # the README's example, 64 tokens


@dataclass(frozen=True)
class MethodSpec:
    """One reduction method: the method-specific model_args it accepts (name -> default, None for
    no default) and its name in tables."""

    label: str
    args: dict[str, Any] = field(default_factory=dict)
    forbidden_why: str = ""  # how a refusal of another method's argument explains itself


METHOD_SPECS: dict[str, MethodSpec] = {
    BASELINE: MethodSpec("baseline", {"level": None}, "the unreduced baseline (level=none)"),
    "random": MethodSpec("Random", {"keep": RANDOM_KEEP, "seed": 0},
                         "method=random (its budget is keep=, its subset seed=; kept tokens stay at their "
                         "original positions, so there is no VTU)"),
    "pool": MethodSpec("Pool", {"pool_factor": POOL_FACTOR, "vtu": False}, "method=pool (its budget is pool_factor=)"),
    "fastv": MethodSpec("FastV", {"fastv_k": FASTV_K, "fastv_ratio": FASTV_RATIO},
                        "method=fastv (it prunes in the LLM, nothing is merged; set fastv_ratio= for the amount)"),
    "visionzip": MethodSpec("VisionZip", {"dominant": VISIONZIP_DOMINANT, "contextual": VISIONZIP_CONTEXTUAL,
                                          "vtu": False},
                            "method=visionzip (its budget is dominant= and contextual=)"),
    "tome": MethodSpec("ToMe", {"level": None, "r": None, "schedule": DEFAULT_SCHEDULE,
                                "merge_order": DEFAULT_MERGE_ORDER, "vtu": False},
                       "method=tome (thresholds are for dymu, fastv_* for fastv)"),
    "dymu": MethodSpec("DyMU", {"level": None, "r": None, "thresholds": DEFAULT_THRESHOLDS,
                                "schedule": DEFAULT_SCHEDULE, "merge_order": DEFAULT_MERGE_ORDER, "vtu": True},
                       "method=dymu (use method=fastv)"),
}
# table order: the order methods sort in (baseline first)
METHOD_ORDER = {spec.label: i for i, spec in enumerate(METHOD_SPECS.values())}
REDUCTION_ARGS = tuple(dict.fromkeys(name for spec in METHOD_SPECS.values() for name in spec.args))

# lmms-eval model name -> the model_args it defaults to (what ``method=`` and ``pretrained=`` mean when absent)
MODEL_DEFAULTS: dict[str, dict[str, str]] = {
    "dymu_llava": {"method": "dymu", "pretrained": LLAVA_15},
    "tome_llava": {"method": "tome", "pretrained": LLAVA_15},
    "fastv_llava": {"method": "fastv", "pretrained": LLAVA_15},
    "random_llava": {"method": "random", "pretrained": LLAVA_15},
    "pool_llava": {"method": "pool", "pretrained": LLAVA_15},
    "visionzip_llava": {"method": "visionzip", "pretrained": LLAVA_15},
    "dymu_llava_onevision": {"method": "dymu", "pretrained": ONEVISION_7B, "family": "onevision"},
    "tome_llava_onevision": {"method": "tome", "pretrained": ONEVISION_7B, "family": "onevision"},
    "fastv_llava_onevision": {"method": "fastv", "pretrained": ONEVISION_7B, "family": "onevision"},
    "random_llava_onevision": {"method": "random", "pretrained": ONEVISION_7B, "family": "onevision"},
    "pool_llava_onevision": {"method": "pool", "pretrained": ONEVISION_7B, "family": "onevision"},
    "visionzip_llava_onevision": {"method": "visionzip", "pretrained": ONEVISION_7B, "family": "onevision"},
}


def default_method(model: str) -> str:
    """The method an lmms-eval model name runs when model_args do not say (the baseline for other models)."""
    return MODEL_DEFAULTS.get(model, {}).get("method", BASELINE)


def method_label(method: str) -> str:
    """A method's name in tables (``dymu`` -> ``DyMU``); unknown names pass through."""
    spec = METHOD_SPECS.get(method)
    return spec.label if spec else method


def check_level(level: str, choices: tuple[str, ...] = LEVELS) -> str:
    """``level`` if it is one of ``choices``, else a ConfigError naming the choices."""
    if level not in choices:
        raise ConfigError(f"unknown level {level!r}; choose one of {', '.join(choices)}")
    return level


def check_schedule(schedule: str) -> str:
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    return schedule


def check_merge_order(order: str) -> str:
    """``order`` if it is a known merge order, else a ConfigError naming them."""
    if order not in MERGE_ORDERS:
        raise ConfigError(f"unknown merge_order {order!r}; choose one of {', '.join(MERGE_ORDERS)}")
    return order


def check_encoder_call(call: str) -> str:
    """``call`` if it is a known encoder calling pattern, else a ConfigError naming them."""
    if call not in ENCODER_CALLS:
        raise ConfigError(f"unknown encoder calling pattern {call!r}; choose one of {', '.join(ENCODER_CALLS)}")
    return call


def check_fastv(k: Any, ratio: Any, decoder_layers: int | None = None) -> None:
    """FastV's bounds: 1 <= k (< the decoder's depth, when known) and 0 <= ratio < 1."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or (decoder_layers is not None and k >= decoder_layers):
        bound = f"in 1..{decoder_layers - 1} for this {decoder_layers}-layer decoder" if decoder_layers else ">= 1"
        raise ConfigError(f"fastv_k={k!r}: must be an integer {bound} (FastV ranks image tokens with the "
                          "attention of layer K-1)")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio < 1.0:
        raise ConfigError(f"fastv_ratio={ratio!r}: must be in [0, 1) (the fraction of image tokens dropped)")


def check_keep(keep: object) -> float:
    """``keep`` as given: an integer count >= 1, or a float fraction in (0, 1] (a whole float above 1 is a count)."""
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not math.isfinite(keep) or keep <= 0:
        raise ConfigError(f"keep={keep!r}: give a token count >= 1 or a fraction in (0, 1]")
    if isinstance(keep, float) and keep > 1.0:
        if not keep.is_integer():
            raise ConfigError(f"keep={keep!r}: a count must be a whole number (fractions are in (0, 1])")
        return int(keep)
    return keep

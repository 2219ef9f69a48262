"""The names dymu-eval speaks in, defined once: levels, schedules, merge orders, dtypes, default
checkpoints and calibration data, and the defaults and bounds of the built-in methods' settings.

Torch-free on purpose, so that every layer may import it. Methods and model families themselves are
registered, not listed here: see ``dymu_eval.methods`` (docs/adding-a-method.md).
"""
from __future__ import annotations

import math
from typing import Any

from .errors import ConfigError

# --- reduction methods -------------------------------------------------------------------------
BASELINE = "none"  # the method (and the level) that reduces nothing
DEFAULT_METHOD = "dymu"  # what dymu_llava and the Python API run when no method= is given

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
NEXT_VICUNA_7B = "llava-hf/llava-v1.6-vicuna-7b-hf"  # the LLaVA-NeXT the peer papers compare on

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


def check_keep(keep: object, name: str = "keep") -> float:
    """``keep`` as given: an integer count >= 1, or a float fraction in (0, 1] (a whole float above 1 is a count)."""
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not math.isfinite(keep) or keep <= 0:
        raise ConfigError(f"{name}={keep!r}: give a token count >= 1 or a fraction in (0, 1]")
    if isinstance(keep, float) and keep > 1.0:
        if not keep.is_integer():
            raise ConfigError(f"{name}={keep!r}: a count must be a whole number (fractions are in (0, 1])")
        return int(keep)
    return keep

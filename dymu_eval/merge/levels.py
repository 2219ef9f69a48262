"""The paper's low/mid/high reduction levels as merges per layer (r), per encoder.

Known encoders (DyMU configs): CLIP ViT-L/14-336 in LLaVA-1.5 21/16/8, SigLIP SO400M/14-384 in
LLaVA-OneVision 24/21/15, SigLIP B/16-384 in LLaVA-1.5-SigLIP 42/32/16.

Rule for any other encoder: keep the fraction of patch tokens CLIP's level removes by the layer
the VLM reads. CLIP-L/336 reads layer 23 of 24 and removes 23*r of its 576 patches, so level
fraction f = 23*r_clip/576 (low 0.839, mid 0.639, high 0.319), and an encoder with P patches that
runs Lr layers gets r = round(f * P / Lr) (at least 1). Example: DINOv2-S/14 at 336 px reading
layer -2 (576 patches, 11 layers) gets 44/33/17, leaving about 92/213/389 patch tokens,
as CLIP's 93/208/392.
"""
from __future__ import annotations

from ..errors import ConfigError
from ..vocabulary import check_level

KNOWN_LEVELS: dict[str, dict[str, int]] = {
    "clip-vit-l-14-336": {"low": 21, "mid": 16, "high": 8},
    "siglip-so400m-14-384": {"low": 24, "mid": 21, "high": 15},
    "siglip-b-16-384": {"low": 42, "mid": 32, "high": 16},
}

_REF_PATCHES = 576
_REF_LAYERS_RUN = 23


def level_fraction(level: str) -> float:
    """Fraction of patch tokens CLIP ViT-L/14-336 removes at this level by the layer LLaVA reads."""
    check_level(level)
    return KNOWN_LEVELS["clip-vit-l-14-336"][level] * _REF_LAYERS_RUN / _REF_PATCHES


def r_for_level(encoder_key: str, level: str, n_patches: int, layers_run: int) -> int:
    """Merges per layer for ``level``: the table for known encoders, the fraction rule otherwise
    (``n_patches`` excludes the CLS token: the rule counts patches only)."""
    check_level(level)
    if encoder_key in KNOWN_LEVELS:
        return KNOWN_LEVELS[encoder_key][level]
    if n_patches <= 0 or layers_run <= 0:
        raise ConfigError(
            f"r_for_level: need n_patches > 0 and layers_run > 0, got {n_patches} and {layers_run} for {encoder_key}"
        )
    return max(1, round(level_fraction(level) * n_patches / layers_run))

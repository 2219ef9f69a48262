"""Loading a family's Hugging Face checkpoint: one place for the architecture check, the dtype
rule and the processor settings every family shares."""
from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError


def load_dtype(name: str, device_map: str) -> torch.dtype | str:
    """``auto`` means fp32 on CPU (half precision is slow and inexact there), else the checkpoint's."""
    if name == "auto":
        return torch.float32 if device_map == "cpu" else "auto"
    return getattr(torch, name)


def load_checkpoint(pretrained: str, model_class: Any, model_type: str, plugin_model: str, example: str,
                    device_map: str, dtype: str = "auto", attn_implementation: str | None = None):
    """(model, processor) of a ``model_type`` checkpoint in eval mode with a left-padding tokenizer;
    ConfigError naming ``pretrained`` for an unreadable config or another architecture."""
    from transformers import AutoConfig, AutoProcessor

    try:
        config = AutoConfig.from_pretrained(pretrained)
    except OSError as exc:
        raise ConfigError(f"pretrained={pretrained}: cannot read a model config ({exc})") from exc
    found = getattr(config, "model_type", None)
    if found != model_type:
        raise ConfigError(f"pretrained={pretrained} is a {found or '?'} model; {plugin_model} needs a "
                          f"{model_class.__name__} checkpoint ({example})")
    kwargs: dict[str, Any] = {"dtype": load_dtype(dtype, device_map), "device_map": device_map}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = model_class.from_pretrained(pretrained, **kwargs).eval()
    processor = AutoProcessor.from_pretrained(pretrained)
    processor.tokenizer.padding_side = "left"
    return model, processor


def family_of_checkpoint(pretrained: str, default: str, asked_by: str = "dymu-eval") -> str:
    """The registered family whose ``model_types`` hold the checkpoint's (``methods.FAMILIES``).
    An unreadable config gives ``default``: its loader then says what is wrong, after the
    settings were checked. ``asked_by`` names the caller in the refusal of another architecture."""
    from transformers import AutoConfig

    from ..methods import FAMILIES

    try:
        model_type = getattr(AutoConfig.from_pretrained(pretrained), "model_type", None)
    except (OSError, ValueError):
        return default
    for name in FAMILIES:
        if model_type in FAMILIES[name].model_types:
            return name
    served = ", ".join(t for f in FAMILIES for t in FAMILIES[f].model_types)
    raise ConfigError(f"pretrained={pretrained} is a {model_type or '?'} model; {asked_by} serves {served} "
                      "checkpoints")

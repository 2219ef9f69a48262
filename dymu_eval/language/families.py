"""Which Hugging Face decoders the language loop drives, and each family's quirks.

The algorithm (VTU attention, FastV, the decode loop) only needs a base text model with
``embed_tokens``, ``layers``, ``norm`` and ``rotary_emb`` whose attention modules dispatch
through ``config._attn_implementation``. Family-specific refusals live in the table below.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError

__all__ = ["SUPPORTED_ROPE_TYPES", "DecoderInfo", "describe_decoder", "split_causal_lm"]

# RoPE kinds whose rotation depends only on the position (so a key can be rotated at any
# virtual position on demand). "dynamic" and "longrope" change their frequencies with the
# running sequence length, so cached keys would be rotated differently from the unmodified model.
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "yarn")


def _no_sliding_window(config) -> None:
    layer_types = getattr(config, "layer_types", None) or []
    if "sliding_attention" in layer_types or (
        getattr(config, "use_sliding_window", False) and getattr(config, "sliding_window", None)
    ):
        raise ConfigError(
            f"{config.model_type} decoder with sliding-window attention (sliding_window={config.sliding_window}) is "
            "not supported: VTU attends over the whole virtual sequence; load it with use_sliding_window=False"
        )


def _nothing(config) -> None:
    return None


def _no_mistral_window(config) -> None:
    """Mistral (LLaVA-NeXT's llava-v1.6-mistral-7b) attends within ``sliding_window`` when it is set."""
    if getattr(config, "sliding_window", None):
        raise ConfigError(f"mistral decoder with sliding-window attention (sliding_window={config.sliding_window}) "
                          "is not supported: VTU attends over the whole virtual sequence")


# model_type -> extra check of the config (raise ConfigError to refuse)
FAMILIES: dict[str, Callable[[object], None]] = {
    "llama": _nothing,
    "qwen2": _no_sliding_window,
    "mistral": _no_mistral_window,
}


@dataclass(frozen=True)
class DecoderInfo:
    """What the loop needs to know about a decoder, read once from its config."""

    family: str
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_type: str
    cache_kwarg: str  # "cache" (transformers >= 5.24) or "past_key_values"


def describe_decoder(decoder: nn.Module) -> DecoderInfo:
    """Check that ``decoder`` is a supported base text model and read its shape; ConfigError otherwise."""
    config = getattr(decoder, "config", None)
    missing = [a for a in ("embed_tokens", "layers", "norm", "rotary_emb") if not hasattr(decoder, a)]
    if config is None or missing:
        raise ConfigError(
            f"{type(decoder).__name__} is not a base text decoder (missing {missing or ['config']}); pass the "
            "text model itself, e.g. LlamaForCausalLM(...).model or llava.model.language_model"
        )
    family = getattr(config, "model_type", None)
    if family not in FAMILIES:
        raise ConfigError(f"decoder family {family!r} is not supported; supported: {sorted(FAMILIES)}")
    FAMILIES[family](config)
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope and isinstance(next(iter(rope.values())), dict):
        raise ConfigError(f"{family} decoder has per-layer-type RoPE parameters, which are not supported")
    rope_type = rope.get("rope_type", rope.get("type", "default")) if rope else "default"
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ConfigError(
            f"RoPE type {rope_type!r} of this {family} decoder is not supported by VTU (its rotation depends on the "
            f"running sequence length, so keys cannot be re-rotated at virtual positions); supported: "
            f"{list(SUPPORTED_ROPE_TYPES)}"
        )
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    params = inspect.signature(decoder.layers[0].forward).parameters
    cache_kwarg = "cache" if "cache" in params else "past_key_values"
    return DecoderInfo(family, len(decoder.layers), heads, kv_heads, head_dim, rope_type, cache_kwarg)


def split_causal_lm(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(base text decoder, lm_head) of a *ForCausalLM or a LLaVA-style model."""
    lm_head = getattr(model, "lm_head", None)
    inner = getattr(model, "model", None)
    if lm_head is None or inner is None:
        raise ConfigError(f"{type(model).__name__} has no .model/.lm_head; pass (decoder, lm_head) yourself")
    decoder = getattr(inner, "language_model", inner)
    describe_decoder(decoder)
    return decoder, lm_head


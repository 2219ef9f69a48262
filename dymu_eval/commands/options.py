"""Options every command shares, so ``--device`` and ``--no-progress`` mean the same thing (and
default the same way) everywhere, and the checks every command makes before it starts working:
numbers in range, output paths that can be written, the encoder calling pattern of a checkpoint."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import ConfigError


def add_runtime_options(p: argparse.ArgumentParser) -> None:
    """``--device`` (default: the GPU of this process when there is one, else cpu) and ``--no-progress``."""
    p.add_argument("--device", help="torch device (default: cuda:<local rank> when a GPU is present, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs, CI)")


def resolve_device(device: str | None) -> str:
    """``--device`` as given (checked here, so a typo or a missing GPU is one line, not a torch
    traceback), else this process's GPU (``LOCAL_RANK`` under torchrun/accelerate) or the CPU."""
    import torch

    if not device:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except RuntimeError as exc:
        raise ConfigError(f"--device {device}: not a torch device (cpu, cuda, cuda:N, ...)") from exc
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is available here; use --device cpu")
    return device


def check_at_least(flag: str, value: int | None, minimum: int) -> None:
    """ConfigError naming ``flag`` when a given ``value`` is below ``minimum`` (None: not given)."""
    if value is not None and value < minimum:
        raise ConfigError(f"{flag} must be >= {minimum}, got {value}")


def check_output_file(flag: str, path: str | os.PathLike | None) -> None:
    """ConfigError naming ``flag`` unless ``path`` can be written as a file: not a folder, and
    its parent a folder or creatable. Checked before the work, not after it."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"{flag} {path}: is a folder; give a file name")
    _check_parent(flag, path, target.parent)


def check_output_folder(flag: str, path: str | os.PathLike | None) -> None:
    """ConfigError naming ``flag`` unless ``path`` is a folder or can become one."""
    if path is None:
        return
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{flag} {path}: is a file; give a folder")
    _check_parent(flag, path, target.parent)


def _check_parent(flag: str, path: str | os.PathLike, parent: Path) -> None:
    for folder in (parent, *parent.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ConfigError(f"{flag} {path}: {folder} is a file, not a folder")
            return


def encoder_call_for(encoder: str) -> str:
    """How the VLM family of checkpoint ``encoder`` calls its vision tower (merge.Threshold ``call``):
    its family module's ``ENCODER_CALL`` (LLaVA-OneVision: all crops of a request in one call;
    LLaVA-1.5: one image per call). A bare vision tower has no VLM: the first pattern (per image)."""
    import transformers

    from ..methods import FAMILIES
    from ..vocabulary import ENCODER_CALLS

    try:
        model_type = transformers.AutoConfig.from_pretrained(encoder).model_type
    except Exception:  # noqa: BLE001 - the encoder loaded already; a config we cannot read again is no VLM
        return ENCODER_CALLS[0]
    for name in FAMILIES:
        if model_type in FAMILIES[name].model_types:
            return FAMILIES[name].encoder_call
    return ENCODER_CALLS[0]


def write_json(path: str | os.PathLike, data: object) -> Path:
    """``data`` as indented JSON at ``path`` (its folders made), for a path ``check_output_file`` passed."""
    import json

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(data, indent=2) + "\n")
    return target

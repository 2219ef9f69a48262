"""Options every command that runs an encoder shares, so ``--device`` and ``--no-progress`` mean
the same thing (and default the same way) everywhere."""
from __future__ import annotations

import argparse
import os

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

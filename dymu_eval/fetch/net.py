"""Fail fast without network: a short reachability check of the Hugging Face hub."""
from __future__ import annotations

import os
import socket
import urllib.parse

from ..errors import ConfigError

HUB_URL = "https://huggingface.co"


def hub_reachable(timeout: float = 5.0) -> tuple[bool, str]:
    """(reachable, reason). Honours HF_HUB_OFFLINE and HF_ENDPOINT; never waits longer than ``timeout``."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False, "HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT", HUB_URL)
    parsed = urllib.parse.urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, f"{host}:{port} reachable"
    except OSError as exc:
        return False, f"cannot reach {host}:{port} within {timeout:g} s ({exc})"


def require_hub(purpose: str, timeout: float = 5.0) -> None:
    ok, why = hub_reachable(timeout)
    if not ok:
        raise ConfigError(f"{purpose} needs the Hugging Face hub, but {why}")

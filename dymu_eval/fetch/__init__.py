"""Fetching calibration images that datasets ship as URL lists (Pixmo-Cap)."""
from .download import Item, Outcome, fetch_all, fetch_one, sha256_file, summarise

__all__ = ["Item", "Outcome", "fetch_all", "fetch_one", "sha256_file", "summarise"]

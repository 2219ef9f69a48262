"""Merge maps: the encoder's input crop with every merged group of patches in its own colour,
so a person can see what merged. Unmerged patches keep the photo; merged groups are outlined."""
from __future__ import annotations

import colorsys

import numpy as np
import torch
from PIL import Image

ALPHA = 0.55


def _palette(n: int) -> np.ndarray:
    """n well-separated colours (golden-ratio hues), the same for every run."""
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    sats = 0.65 + 0.3 * ((np.arange(n) * 7) % 3) / 2
    return np.array([colorsys.hsv_to_rgb(h, s, 0.95) for h, s in zip(hues, sats)], dtype=np.float32) * 255


def merge_map(image: Image.Image, groups: torch.Tensor | np.ndarray, grid: tuple[int, int]) -> Image.Image:
    """Overlay for one image: ``groups`` gives, for each patch in row-major order, its token index."""
    rows, cols = grid
    labels = np.asarray(groups.cpu() if isinstance(groups, torch.Tensor) else groups, dtype=np.int64)
    if labels.size != rows * cols:
        raise ValueError(f"{labels.size} patch labels do not fill a {rows}x{cols} grid")
    labels = labels.reshape(rows, cols)
    sizes = np.bincount(labels.ravel())
    # Upsample the patch labels to pixels (nearest neighbour).
    width, height = image.size
    ys = np.minimum(np.arange(height) * rows // height, rows - 1)
    xs = np.minimum(np.arange(width) * cols // width, cols - 1)
    pix = labels[ys][:, xs]
    photo = np.asarray(image.convert("RGB"), dtype=np.float32)
    colours = _palette(len(sizes))[pix]
    merged = sizes[pix] > 1
    out = np.where(merged[..., None], (1 - ALPHA) * photo + ALPHA * colours, photo)
    # Outline merged groups: pixels whose right or lower neighbour is in another group, where
    # at least one of the two groups is merged (single patches stay untouched).
    border = np.zeros(pix.shape, dtype=bool)
    border[:, :-1] |= (pix[:, 1:] != pix[:, :-1]) & (merged[:, 1:] | merged[:, :-1])
    border[:-1, :] |= (pix[1:, :] != pix[:-1, :]) & (merged[1:, :] | merged[:-1, :])
    out[border] = 0.25 * out[border]
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))

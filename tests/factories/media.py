"""Folders of small random images and tiny local ``.mp4`` videos."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_images(folder, count: int, seed: int = 0, size: tuple[int, int] = (40, 36)):
    """``count`` random photos-ish images (smooth blobs plus noise, varied detail) as PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        h, w = size[1], size[0]
        coarse = rng.integers(0, 256, size=(rng.integers(2, 9), rng.integers(2, 9), 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR), dtype=np.float64)
        noise = rng.normal(0, rng.uniform(0, 40), size=base.shape)
        arr = np.clip(base + noise, 0, 255).astype(np.uint8)
        path = folder / f"img_{i:03d}.png"
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


def write_video(path: Path, frames: int, size: tuple[int, int] = (64, 48), seed: int = 0) -> Path:
    """A small ``.mp4`` (MPEG-4 Part 2, via PyAV) of moving coloured blocks with ``frames`` frames."""
    import av

    rng = np.random.default_rng(seed)
    w, h = size
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        base = rng.integers(0, 255, size=(h // 8, w // 8, 3), dtype=np.uint8)
        for i in range(frames):
            img = np.kron(np.roll(base, i, axis=1), np.ones((8, 8, 1), dtype=np.uint8))
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def random_image(h: int, w: int, seed: int) -> Image.Image:
    """An ``h`` x ``w`` RGB image of uniform random pixels."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))

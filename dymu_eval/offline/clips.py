"""Generated video clips with exactly known contents, for the offline video tasks.

Why: the offline OneVision demo needs videos whose answers are certain and whose complexity
varies on purpose, like the generated images in :mod:`dymu_eval.offline.synthetic`. There
are two families of clip, each a pure function of its arguments:

* shape clips over a plain, busy or noisy background (the backgrounds of the image tasks):
  ``appear`` (an empty background, then a shape appears and stays), ``move`` (one to three
  shapes slide across on separate lanes) and ``recolour`` (a shape changes colour halfway);
* camera clips over a real photo that a wheel ships: ``pan`` (a square window sweeps across)
  and ``zoom`` (the window closes in on the centre).

Every event lasts at least a third of the clip, so any uniform sampling of four or more frames
sees it. Shapes are at least 40 px across in 224 px frames: OneVision pools video features 2x2,
so a 14 px patch grid becomes a 28 px one, and smaller shapes blur into their background.

    frames, facts = shape_clip(seed, "move", "busy")     # list of HxWx3 uint8 arrays
    frames = photo_clip(path, "pan")
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dymu_eval.errors import ConfigError
from dymu_eval.offline.synthetic import (
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    Obj,
    draw_background,
    draw_shape,
)

FRAME_SIZE = 224
NUM_FRAMES = 16
FPS = 8
SHAPE_KINDS = ("appear", "move", "recolour")
CAMERA_KINDS = ("pan", "zoom")


@dataclass
class ClipFacts:
    """Ground truth of a generated clip: the objects drawn in every frame, in order."""

    kind: str
    background: str                                  # plain | busy | noisy | photo
    frames: list[list[Obj]] = field(default_factory=list)
    change_frame: int | None = None                  # where a shape appears or changes colour

    def seen(self) -> set[tuple[str, str]]:
        """Every (shape, colour) visible in at least one frame."""
        return {(o.shape, o.colour) for objs in self.frames for o in objs}

    def first(self) -> list[Obj]:
        return self.frames[0]

    def last(self) -> list[Obj]:
        return self.frames[-1]


def _lanes(n: int, size: int, r: float, rng: random.Random) -> list[float]:
    """``n`` well separated rows (y centres) for shapes that slide horizontally."""
    step = size / n
    return [step * (k + 0.5) + rng.uniform(-0.1, 0.1) * step for k in range(n)] if n > 1 else \
        [rng.uniform(r + 4, size - r - 4)]


def _slide(shape: str, colour: str, y: float, r: float, size: int, rng: random.Random) -> list[Obj]:
    """One shape moving across the frame (either direction) over the whole clip."""
    lo, hi = r + 4, size - r - 4
    x0, x1 = (lo + rng.uniform(0, 0.2) * size, hi - rng.uniform(0, 0.2) * size)
    if rng.random() < 0.5:
        x0, x1 = x1, x0
    return [Obj(shape, colour, x0 + (x1 - x0) * t / (NUM_FRAMES - 1), y, r) for t in range(NUM_FRAMES)]


def _scene_objects(kind: str, size: int, rng: random.Random) -> tuple[list[list[Obj]], int | None]:
    kinds = [(s, c) for s in SHAPES for c in COLOURS]
    if kind == "move":
        n = rng.randint(1, 3)
        r = size * (rng.uniform(0.10, 0.13) if n == 1 else rng.uniform(0.09, 0.11))
        tracks = [_slide(s, c, y, r, size, rng) for (s, c), y in zip(rng.sample(kinds, n), _lanes(n, size, r, rng))]
        return [list(objs) for objs in zip(*tracks)], None
    r = size * rng.uniform(0.10, 0.13)
    shape, colour = rng.choice(kinds)
    x, y = rng.uniform(r + 4, size - r - 4), rng.uniform(r + 4, size - r - 4)
    change = rng.randint(NUM_FRAMES // 3, NUM_FRAMES // 2)
    if kind == "appear":
        return [[] if t < change else [Obj(shape, colour, x, y, r)] for t in range(NUM_FRAMES)], change
    if kind == "recolour":
        after = rng.choice([c for c in COLOURS if c != colour])
        return [[Obj(shape, colour if t < change else after, x, y, r)] for t in range(NUM_FRAMES)], change
    raise ConfigError(f"shape clip kind={kind!r}; expected one of {SHAPE_KINDS}")


def shape_clip(seed: int, kind: str, background: str, size: int = FRAME_SIZE) -> tuple[list[np.ndarray], ClipFacts]:
    """Frames (``NUM_FRAMES`` arrays, ``size`` x ``size`` x 3, uint8) and facts of a shape clip.

    The background is drawn once (a static camera); only the shapes change between frames.
    """
    if background not in BACKGROUNDS:
        raise ConfigError(f"background={background!r}; expected one of {BACKGROUNDS}")
    rng = random.Random(seed)
    frames_objs, change = _scene_objects(kind, size, rng)
    ground = draw_background(background, size, random.Random(rng.randrange(1 << 30)))
    frames = []
    for objs in frames_objs:
        img = ground.copy()
        draw = ImageDraw.Draw(img)
        for o in objs:
            draw_shape(draw, o)
        frames.append(np.asarray(img, dtype=np.uint8))
    return frames, ClipFacts(kind, background, frames_objs, change)


def _window(kind: str, t: float, width: int, height: int) -> tuple[float, float, float]:
    """(left, top, side) of the square camera window at time ``t`` in [0, 1]."""
    short = min(width, height)
    if kind == "pan":
        side = 0.75 * short
        if width >= height:
            return (width - side) * t, (height - side) / 2, side
        return (width - side) / 2, (height - side) * t, side
    if kind == "zoom":
        side = short * (1.0 - 0.5 * t)
        return (width - side) / 2, (height - side) / 2, side
    raise ConfigError(f"camera clip kind={kind!r}; expected one of {CAMERA_KINDS}")


def photo_clip(path: Path | str, kind: str, size: int = FRAME_SIZE) -> list[np.ndarray]:
    """A camera ``pan`` across, or ``zoom`` into, the photo at ``path`` (square frames)."""
    try:
        with Image.open(path) as img:
            photo = img.convert("RGB")
    except OSError as exc:
        raise ConfigError(f"photo {path} cannot be read: {exc}") from exc
    frames = []
    for k in range(NUM_FRAMES):
        left, top, side = _window(kind, k / (NUM_FRAMES - 1), *photo.size)
        box = (left, top, left + side, top + side)
        frames.append(np.asarray(photo.resize((size, size), Image.Resampling.BICUBIC, box=box), dtype=np.uint8))
    return frames


def complexity(frames: list[np.ndarray]) -> float:
    """The paper's image-complexity measure over the clip: JPEG (q=90) bytes per pixel."""
    from dymu_eval.vlm.llava import jpeg_bytes_per_pixel

    return jpeg_bytes_per_pixel([Image.fromarray(f) for f in frames])

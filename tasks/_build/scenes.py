"""Synthetic scenes of coloured shapes on plain or busy backgrounds, with ground truth.

Why: the offline tasks need images whose answers are known exactly (existence, colour,
count, position) and whose visual complexity varies on purpose (plain backgrounds should
merge into few tokens, busy ones into many). Deterministic for a given seed.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (214, 39, 40),
    "green": (44, 160, 44),
    "blue": (31, 119, 180),
    "yellow": (240, 200, 20),
    "purple": (148, 60, 189),
}
PLAIN_BACKGROUNDS = ((245, 245, 245), (235, 228, 210), (225, 235, 245))


@dataclass
class Item:
    shape: str
    colour: str
    cx: float  # centre, pixels
    cy: float
    radius: float


@dataclass
class Scene:
    size: int
    busy: bool
    items: list[Item] = field(default_factory=list)
    seed: int = 0

    def count(self, shape: str) -> int:
        return sum(i.shape == shape for i in self.items)

    def has(self, shape: str | None = None, colour: str | None = None) -> bool:
        return any((shape is None or i.shape == shape) and (colour is None or i.colour == colour) for i in self.items)


def _busy_background(size: int, rng: random.Random) -> Image.Image:
    img = Image.new("RGB", (size, size), tuple(rng.randint(60, 200) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    step = rng.choice((12, 16, 24))
    for k in range(-size, 2 * size, step):  # diagonal stripes
        col = tuple(rng.randint(40, 220) for _ in range(3))
        draw.line([(k, 0), (k + size, size)], fill=col, width=step // 2)
    for _ in range(40):  # scattered clutter: thin rings and short lines, never filled shapes
        x, y, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(4, 20)
        col = tuple(rng.randint(0, 255) for _ in range(3))
        draw.ellipse([x - r, y - r, x + r, y + r], outline=col, width=2)
    return img.filter(ImageFilter.GaussianBlur(0.6))


def _draw_item(draw: ImageDraw.ImageDraw, item: Item) -> None:
    c, (x, y, r) = COLOURS[item.colour], (item.cx, item.cy, item.radius)
    if item.shape == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=c, outline=(0, 0, 0), width=2)
    elif item.shape == "square":
        s = r * 0.9
        draw.rectangle([x - s, y - s, x + s, y + s], fill=c, outline=(0, 0, 0), width=2)
    else:
        pts = [(x + r * math.cos(a), y + r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        draw.polygon(pts, fill=c, outline=(0, 0, 0))


def render(scene: Scene) -> Image.Image:
    """Draw a scene; the same scene (with its seed) always gives the same pixels."""
    rng = random.Random(scene.seed)
    if scene.busy:
        img = _busy_background(scene.size, rng)
    else:
        img = Image.new("RGB", (scene.size, scene.size), rng.choice(PLAIN_BACKGROUNDS))
    draw = ImageDraw.Draw(img)
    for item in scene.items:
        _draw_item(draw, item)
    return img


def _place(n: int, size: int, rng: random.Random, radius: float, columns: list[float] | None = None) -> list[tuple[float, float]]:
    """Non-overlapping centres; ``columns`` fixes x positions (used for left/right questions)."""
    out: list[tuple[float, float]] = []
    for k in range(n):
        for _ in range(500):
            x = columns[k] if columns else rng.uniform(radius + 4, size - radius - 4)
            y = rng.uniform(radius + 4, size - radius - 4)
            if all(math.hypot(x - a, y - b) > 2.3 * radius for a, b in out):
                out.append((x, y))
                break
        else:
            raise RuntimeError("could not place shapes without overlap; lower n or radius")
    return out


def make_scene(rng: random.Random, size: int, busy: bool, shapes: list[tuple[str, str]],
               left_to_right: bool = False) -> Scene:
    """A scene with the given (shape, colour) items; ``left_to_right`` puts them in that order."""
    radius = size * (0.11 if len(shapes) <= 2 else 0.08)
    columns = None
    if left_to_right:
        columns = [size * (k + 0.5) / len(shapes) for k in range(len(shapes))]
    centres = _place(len(shapes), size, rng, radius, columns)
    items = [Item(s, c, x, y, radius) for (s, c), (x, y) in zip(shapes, centres)]
    return Scene(size=size, busy=busy, items=items, seed=rng.randrange(1 << 30))

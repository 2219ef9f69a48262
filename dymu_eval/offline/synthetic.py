"""Generated pictures with exactly known contents, and questions about them.

Why: the micro LLaVA needs image-question-answer triples whose answers are certain (to train
its projector and to measure it), and whose visual complexity varies on purpose: a few shapes
on a plain background should merge into few tokens, the same shapes on a busy or noisy
background into many. Everything is a pure function of a seed.

Vocabulary (shapes, colour names and RGB values, backgrounds) matches the scenes of the
offline lmms-eval tasks in ``tasks/``, so a model trained here is asked about the same things.

    image, facts = make_scene(seed)
    qa = yes_no_questions(facts, random.Random(seed), n=8)   # balanced yes/no
    qa += short_questions(facts, random.Random(seed))        # colour / shape / count / side
    text = caption(facts)
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from dymu_eval.errors import ConfigError

SHAPES = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40),
    "green": (44, 160, 44),
    "blue": (31, 119, 180),
    "yellow": (240, 200, 20),
    "purple": (148, 60, 189),
}
PLAIN_BACKGROUNDS = ((245, 245, 245), (235, 228, 210), (225, 235, 245))
BACKGROUNDS = ("plain", "busy", "noisy")
# Things that photographs show but generated scenes never do (negatives for existence questions).
OBJECT_WORDS = ("cat", "person", "car", "dog", "cup", "flower", "motorcycle", "rocket", "building", "tree")
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}


@dataclass(frozen=True)
class Obj:
    """One drawn shape: centre and radius in pixels."""

    shape: str
    colour: str
    cx: float
    cy: float
    r: float

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass
class Facts:
    """Ground truth of a generated scene."""

    size: int
    background: str
    objects: list[Obj] = field(default_factory=list)

    def count(self, shape: str | None = None, colour: str | None = None) -> int:
        return sum((shape is None or o.shape == shape) and (colour is None or o.colour == colour) for o in self.objects)

    def has(self, shape: str | None = None, colour: str | None = None) -> bool:
        return self.count(shape, colour) > 0

    def unique(self, shape: str | None = None, colour: str | None = None) -> Obj | None:
        """The only object matching, or None when there are zero or several."""
        found = [o for o in self.objects
                 if (shape is None or o.shape == shape) and (colour is None or o.colour == colour)]
        return found[0] if len(found) == 1 else None


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    kind: str  # existence | colour | count | position | object | caption | ...


# -- drawing ---------------------------------------------------------------------------------

def _busy(size: int, rng: random.Random) -> Image.Image:
    img = Image.new("RGB", (size, size), tuple(rng.randint(60, 200) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    step = rng.choice((12, 16, 24))
    for k in range(-size, 2 * size, step):  # diagonal stripes
        draw.line([(k, 0), (k + size, size)], fill=tuple(rng.randint(40, 220) for _ in range(3)), width=step // 2)
    for _ in range(40):  # clutter: thin rings only, never filled shapes that could be mistaken for objects
        x, y, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(4, 20)
        draw.ellipse([x - r, y - r, x + r, y + r], outline=tuple(rng.randint(0, 255) for _ in range(3)), width=2)
    return img.filter(ImageFilter.GaussianBlur(0.6))


def _noisy(size: int, rng: random.Random) -> Image.Image:
    gen = np.random.default_rng(rng.randrange(1 << 30))
    base = np.array([rng.randint(70, 190) for _ in range(3)], dtype=np.float32)
    coarse = gen.normal(0, 40, (size // 8 + 1, size // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:size, :size]
    fine = gen.normal(0, 25, (size, size, 3))
    return Image.fromarray(np.clip(base + coarse + fine, 0, 255).astype(np.uint8))


def draw_shape(draw: ImageDraw.ImageDraw, o: Obj, fill=None, outline=(0, 0, 0)) -> None:
    """Draw one object (in its own colour unless ``fill`` is given, e.g. a label for a mask)."""
    fill, (x, y, r) = COLOURS[o.colour] if fill is None else fill, (o.cx, o.cy, o.r)
    if o.shape == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill, outline=outline, width=2)
    elif o.shape == "square":
        s = r * 0.9
        draw.rectangle([x - s, y - s, x + s, y + s], fill=fill, outline=outline, width=2)
    else:
        pts = [(x + r * math.cos(a), y + r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        draw.polygon(pts, fill=fill, outline=outline)


def draw_background(background: str, size: int, rng: random.Random) -> Image.Image:
    """A ``size``-square background of kind ``background`` (plain, busy or noisy), drawn from ``rng``."""
    if background == "busy":
        return _busy(size, rng)
    if background == "noisy":
        return _noisy(size, rng)
    if background == "plain":
        return Image.new("RGB", (size, size), rng.choice(PLAIN_BACKGROUNDS))
    raise ConfigError(f"background={background!r}; expected one of {BACKGROUNDS}")


def render(facts: Facts, seed: int) -> Image.Image:
    """Draw ``facts``; the background texture depends on ``seed`` only."""
    img = draw_background(facts.background, facts.size, random.Random(seed))
    draw = ImageDraw.Draw(img)
    for o in facts.objects:
        draw_shape(draw, o)
    return img


# -- scenes ----------------------------------------------------------------------------------

def _place(items: list[tuple[str, str]], size: int, rng: random.Random, ordered: bool) -> list[Obj]:
    r = size * rng.uniform(0.09, 0.12) if len(items) <= 2 else size * rng.uniform(0.065, 0.085)
    out: list[Obj] = []
    for k, (shape, colour) in enumerate(items):
        for _ in range(1000):
            if ordered:  # strictly increasing x, well apart, for left/right questions
                x = size * (k + 0.5) / len(items) + rng.uniform(-0.08, 0.08) * size / len(items)
            else:
                x = rng.uniform(r + 4, size - r - 4)
            y = rng.uniform(r + 4, size - r - 4)
            if all(math.hypot(x - o.cx, y - o.cy) > 2.3 * r for o in out):
                out.append(Obj(shape, colour, x, y, r))
                break
        else:
            raise ConfigError(f"cannot place {len(items)} shapes without overlap in a {size} px image")
    return out


def make_scene(seed: int, size: int = 336, background: str | None = None,
               n_objects: int | None = None, layout: str | None = None) -> tuple[Image.Image, Facts]:
    """A random scene of coloured shapes and its facts, fully determined by the arguments.

    layout: 'mixed' (distinct shape/colour pairs), 'count' (repeats of one kind, maybe one
    other), 'pair' (two objects side by side) or None (chosen at random).
    """
    if background is not None and background not in BACKGROUNDS:
        raise ConfigError(f"background={background!r}; expected one of {BACKGROUNDS}")
    rng = random.Random(seed)
    layout = layout or rng.choice(("mixed", "mixed", "count", "pair"))
    background = background or rng.choice(BACKGROUNDS)
    kinds = [(s, c) for s in SHAPES for c in COLOURS]
    if layout == "mixed":
        n = n_objects or rng.randint(1, 4)
        items = rng.sample(kinds, n)
    elif layout == "count":
        shape, colour = rng.choice(kinds)
        n = n_objects or rng.randint(1, 5)
        items = [(shape, colour)] * n
        if n < 5 and rng.random() < 0.5:
            items.append((rng.choice([s for s in SHAPES if s != shape]), rng.choice(list(COLOURS))))
        rng.shuffle(items)
    elif layout == "pair":
        items = rng.sample(kinds, 2)
        if items[0][0] == items[1][0]:
            items[1] = (rng.choice([s for s in SHAPES if s != items[0][0]]), items[1][1])
    else:
        raise ConfigError(f"layout={layout!r}; expected mixed, count or pair")
    facts = Facts(size, background, _place(items, size, rng, ordered=layout == "pair"))
    return render(facts, rng.randrange(1 << 30)), facts


# -- questions -------------------------------------------------------------------------------

def _in(rng: random.Random) -> str:
    return rng.choice(("in the image", "in this image", "in the picture"))


def _absent_kind(facts: Facts, rng: random.Random) -> tuple[str, str]:
    """An absent (shape, colour), half the time a near miss sharing shape or colour."""
    present = {(o.shape, o.colour) for o in facts.objects}
    near = ([(o.shape, c) for o in facts.objects for c in COLOURS]
            + [(s, o.colour) for o in facts.objects for s in SHAPES])
    pool = [k for k in near if k not in present] if rng.random() < 0.5 else []
    pool = pool or [(s, c) for s in SHAPES for c in COLOURS if (s, c) not in present]
    return rng.choice(pool)


def _existence(facts: Facts, rng: random.Random, want: bool) -> QA:
    mode = rng.random()
    if mode < 0.6:
        o = rng.choice(facts.objects)
        shape, colour = (o.shape, o.colour) if want else _absent_kind(facts, rng)
        return QA(f"Is there a {colour} {shape} {_in(rng)}?", "Yes" if want else "No", "existence")
    if mode < 0.8:
        shapes = [s for s in SHAPES if facts.has(s) == want]
        if shapes:
            return QA(f"Is there a {rng.choice(shapes)} {_in(rng)}?", "Yes" if want else "No", "existence")
    if not want:
        return QA(f"Is there a {rng.choice(OBJECT_WORDS)} {_in(rng)}?", "No", "object")
    colours = [c for c in COLOURS if facts.has(colour=c)]
    return QA(f"Is there anything {rng.choice(colours)} {_in(rng)}?", "Yes", "existence")


def _colour_check(facts: Facts, rng: random.Random, want: bool) -> QA | None:
    uniques = [o for o in facts.objects if facts.unique(shape=o.shape)]
    if not uniques:
        return None
    o = rng.choice(uniques)
    colour = o.colour if want else rng.choice([c for c in COLOURS if c != o.colour])
    return QA(f"Is the {o.shape} {colour}?", "Yes" if want else "No", "colour")


def _count_check(facts: Facts, rng: random.Random, want: bool) -> QA | None:
    shape = rng.choice([o.shape for o in facts.objects])
    n = facts.count(shape)
    m = n if want else rng.choice([k for k in range(1, 6) if k != n])
    q = f"Is there exactly one {shape} {_in(rng)}?" if m == 1 else f"Are there {m} {shape}s {_in(rng)}?"
    return QA(q, "Yes" if want else "No", "count")


def _position_check(facts: Facts, rng: random.Random, want: bool) -> QA | None:
    named = [o for o in facts.objects if facts.unique(o.shape, o.colour)]
    pairs = [(a, b) for a in named for b in named if a is not b and abs(a.cx - b.cx) > 1.5 * a.r]
    if not pairs:
        return None
    a, b = rng.choice(pairs)
    left = a.cx < b.cx
    side = "left" if left == want else "right"
    return QA(f"Is the {a.name} on the {side} of the {b.name}?", "Yes" if want else "No", "position")


def yes_no_questions(facts: Facts, rng: random.Random, n: int = 8) -> list[QA]:
    """``n`` yes/no questions, half answered Yes (n even), mixing existence, colour, count, position."""
    out: list[QA] = []
    makers = (_existence, _existence, _colour_check, _count_check, _position_check)
    for k in range(n):
        want = k % 2 == 0
        for _ in range(20):
            qa = rng.choice(makers)(facts, rng, want)
            if qa is not None and qa.question not in {x.question for x in out}:
                out.append(qa)
                break
    rng.shuffle(out)
    return out


def short_questions(facts: Facts, rng: random.Random) -> list[QA]:
    """Questions answered with one word: colour, shape, count, side."""
    out = []
    for o in facts.objects:
        if facts.unique(shape=o.shape):
            out.append(QA(f"What color is the {o.shape}?", o.colour.capitalize(), "colour"))
        if facts.unique(colour=o.colour):
            out.append(QA(f"What shape is the {o.colour} object?", o.shape.capitalize(), "shape"))
    shape = rng.choice([o.shape for o in facts.objects])
    out.append(QA(f"How many {shape}s are there?", str(facts.count(shape)), "count"))
    out.append(QA("How many shapes are there?", str(len(facts.objects)), "count"))
    if len(facts.objects) == 2:
        a, b = sorted(facts.objects, key=lambda o: o.cx)
        if b.cx - a.cx > 1.5 * a.r:
            out.append(QA("What shape is on the left?", a.shape.capitalize(), "position"))
            out.append(QA(f"Which side is the {b.name} on?", "Right", "position"))
            out.append(QA(f"Which side is the {a.name} on?", "Left", "position"))
    rng.shuffle(out)
    return out


def caption(facts: Facts) -> str:
    """One sentence naming every object, e.g. 'Two red circles and a blue square on a busy background.'"""
    groups: dict[tuple[str, str], int] = {}
    for o in facts.objects:
        groups[(o.colour, o.shape)] = groups.get((o.colour, o.shape), 0) + 1
    parts = [f"a {c} {s}" if k == 1 else f"{NUMBER_WORDS[k]} {c} {s}s" for (c, s), k in groups.items()]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    ground = {"plain": "a plain background", "busy": "a busy striped background", "noisy": "a noisy background"}
    text = f"{listed} on {ground[facts.background]}."
    return text[0].upper() + text[1:]

"""Rebuild the bundled data of the offline tasks (images + JSON-lines), deterministically.

Run from the repository root:  python tasks/_build/make_data.py
The outputs (tasks/dymu_offline/images/*.jpg and tasks/dymu_offline/*.jsonl) are committed,
so users never need to run this; it exists so the data can be audited and regenerated.

Images: the real photos that scikit-image, scikit-learn and matplotlib ship in their wheels,
resized, plus scenes of coloured shapes on plain, busy and noisy backgrounds drawn by
``dymu_eval.offline.synthetic`` (the generator the demo's offline model is trained with, so
the demo is asked about the same things it learnt).
"""
from __future__ import annotations

import io
import json
import random
from collections import Counter
from pathlib import Path

from PIL import Image

from dymu_eval.offline.synthetic import COLOURS, SHAPES, Facts, make_scene

OUT = Path(__file__).resolve().parent.parent / "dymu_offline"
SIZE = 336
JPEG_QUALITY = 85

# What each photo shows (present) and plausible objects it does not show (absent), plus one
# short-answer question; written by looking at the images.
PHOTOS = {
    "astronaut": (["person", "flag"], ["cat", "motorcycle"], ("What is the woman wearing?", "spacesuit")),
    "chelsea": (["cat"], ["person", "car"], ("What animal is in the picture?", "cat")),
    "coffee": (["cup", "spoon"], ["cat", "person"], ("What drink is in the cup?", "coffee")),
    "rocket": (["rocket"], ["cat", "cup"], ("What vehicle is launching?", "rocket")),
    "motorcycle_left": (["motorcycle"], ["cat", "person"], ("What vehicle is shown?", "motorcycle")),
    "hubble_deep_field": (["galaxy"], ["person", "car"], None),
    "china": (["building", "tree"], ["cat", "motorcycle"], None),
    "flower": (["flower"], ["person", "car"], ("What is shown in the picture?", "flower")),
    "grace_hopper": (["person"], ["cat", "motorcycle"], None),
}


def _photo_paths() -> dict[str, Path]:
    """Photo files from the installed wheels."""
    from dymu_eval.offline.assets import sample_photos

    return {k: Path(v) for k, v in sample_photos(list(PHOTOS)).items()}


def _save(img: Image.Image, name: str) -> str:
    path = OUT / "images" / f"{name}.jpg"
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
    path.write_bytes(buf.getvalue())
    return f"images/{name}.jpg"


def _photo(name: str, src: Path) -> str:
    img = Image.open(src).convert("RGB")
    img.thumbnail((SIZE, SIZE), Image.Resampling.BICUBIC)
    return _save(img, f"photo_{name}")


def _other(rng: random.Random, options, exclude) -> str:
    return rng.choice([o for o in options if o not in exclude])


def _n_word(n: int) -> str:
    return str(n)


def build() -> dict[str, list[dict]]:
    rng = random.Random(20250417)
    (OUT / "images").mkdir(parents=True, exist_ok=True)
    for old in (OUT / "images").glob("*.jpg"):
        old.unlink()
    photos = _photo_paths()
    photo_files = {name: _photo(name, photos[name]) for name in PHOTOS}

    kinds: dict[str, list[tuple[str, Facts]]] = {"single": [], "count": [], "pair": [], "mixed": []}
    for k in range(48):
        kind = ("single", "count", "pair", "mixed")[k % 4]
        background = ("plain", "busy", "noisy")[(k // 4) % 3]
        layout = "mixed" if kind == "single" else kind
        n = 1 if kind == "single" else (rng.randint(2, 3) if kind == "mixed" else (rng.randint(1, 4) if kind == "count" else None))
        image, facts = make_scene(rng.randrange(1 << 30), SIZE, background=background, n_objects=n, layout=layout)
        kinds[kind].append((_save(image, f"scene_{k:02d}_{kind}_{background}"), facts))

    return {
        "pope": _pope(rng, photo_files, kinds),
        "mme": _mme(rng, photo_files, kinds),
        "gqa": _gqa(rng, photo_files, kinds),
    }


def _absent_pair(rng: random.Random, scene: Facts) -> tuple[str, str]:
    while True:
        s, c = rng.choice(SHAPES), rng.choice(list(COLOURS))
        if not scene.has(s, c):
            return s, c


def _src(scene: Facts | None) -> str:
    return "photo" if scene is None else scene.background


def _counted(scene: Facts) -> str:
    """The shape a count scene repeats (the most common one)."""
    return Counter(o.shape for o in scene.objects).most_common(1)[0][0]


def _pope(rng, photo_files, kinds) -> list[dict]:
    rows = []
    for name, (present, absent, _) in PHOTOS.items():
        for obj, ans in ((rng.choice(present), "yes"), (rng.choice(absent), "no")):
            rows.append(dict(image_file=photo_files[name], question=f"Is there a {obj} in the image?",
                             answer=ans, category="photo", source="photo"))
    for file, scene in kinds["mixed"] + kinds["single"]:
        it = rng.choice(scene.objects)
        s, c = _absent_pair(rng, scene)
        for (shape, colour), ans in (((it.shape, it.colour), "yes"), ((s, c), "no")):
            rows.append(dict(image_file=file, question=f"Is there a {colour} {shape} in the image?",
                             answer=ans, category="shapes", source=_src(scene)))
    rng.shuffle(rows)
    for i, r in enumerate(rows):
        r["question_id"] = f"pope_{i:03d}"
    return rows


def _mme(rng, photo_files, kinds) -> list[dict]:
    """Exactly two questions per image (one yes, one no), adjacent, as MME scoring requires."""
    suffix = " Please answer yes or no."
    pairs: list[tuple[str, str, str, list[tuple[str, str]]]] = []  # (qid, file, category, [(q, a)])
    for name, (present, absent, _) in PHOTOS.items():
        pairs.append((f"photo_{name}", photo_files[name], "existence",
                      [(f"Is there a {rng.choice(present)} in this image?", "yes"),
                       (f"Is there a {rng.choice(absent)} in this image?", "no")]))
    for file, scene in kinds["mixed"][:4]:
        it, (s, c) = rng.choice(scene.objects), _absent_pair(rng, scene)
        pairs.append((Path(file).stem, file, "existence",
                      [(f"Is there a {it.colour} {it.shape} in this image?", "yes"),
                       (f"Is there a {c} {s} in this image?", "no")]))
    for file, scene in kinds["count"][:6]:
        shape = _counted(scene)
        n = scene.count(shape)
        wrong = rng.choice([m for m in range(1, 6) if m != n])
        pairs.append((Path(file).stem, file, "count",
                      [(f"Are there {n} {shape}s in this image?" if n > 1 else f"Is there exactly one {shape} in this image?", "yes"),
                       (f"Are there {wrong} {shape}s in this image?" if wrong > 1 else f"Is there exactly one {shape} in this image?", "no")]))
    for file, scene in kinds["pair"][:6]:
        a, b = scene.objects
        pairs.append((Path(file).stem, file, "position",
                      [(f"Is the {a.colour} {a.shape} on the left of the {b.colour} {b.shape}?", "yes"),
                       (f"Is the {b.colour} {b.shape} on the left of the {a.colour} {a.shape}?", "no")]))
    for file, scene in kinds["single"][:5]:
        it = scene.objects[0]
        wrong = _other(rng, list(COLOURS), [it.colour])
        pairs.append((Path(file).stem, file, "color",
                      [(f"Is the {it.shape} {it.colour}?", "yes"), (f"Is the {it.shape} {wrong}?", "no")]))
    rng.shuffle(pairs)
    rows = []
    for qid, file, cat, qa in pairs:
        if rng.random() < 0.5:
            qa = qa[::-1]
        for q, a in qa:
            rows.append(dict(question_id=qid, image_file=file, question=q + suffix, answer=a.capitalize(), category=cat))
    return rows


def _gqa(rng, photo_files, kinds) -> list[dict]:
    rows = []
    for name, (_, _, qa) in PHOTOS.items():
        if qa:
            rows.append(dict(image_file=photo_files[name], question=qa[0], answer=qa[1], category="photo", source="photo"))
    for file, scene in kinds["single"]:
        it = scene.objects[0]
        rows.append(dict(image_file=file, question=f"What color is the {it.shape}?", answer=it.colour, category="color", source=_src(scene)))
        rows.append(dict(image_file=file, question=f"What shape is the {it.colour} object?", answer=it.shape, category="shape", source=_src(scene)))
    for file, scene in kinds["count"]:
        shape = _counted(scene)
        rows.append(dict(image_file=file, question=f"How many {shape}s are there?", answer=_n_word(scene.count(shape)),
                         category="count", source=_src(scene)))
    for file, scene in kinds["pair"]:
        a, b = scene.objects
        rows.append(dict(image_file=file, question=f"What shape is on the left?", answer=a.shape, category="position", source=_src(scene)))
        rows.append(dict(image_file=file, question=f"Which side is the {b.colour} {b.shape} on?", answer="right", category="position", source=_src(scene)))
    rng.shuffle(rows)
    for i, r in enumerate(rows):
        r["question_id"] = f"gqa_{i:03d}"
    return rows


def main() -> None:
    data = build()
    for task, rows in data.items():
        with open(OUT / f"{task}.jsonl", "w") as f:
            for r in rows:
                f.write(json.dumps(r, sort_keys=True) + "\n")
        print(f"{task}: {len(rows)} rows")
    total = sum(p.stat().st_size for p in (OUT / "images").glob("*.jpg"))
    print(f"images: {len(list((OUT / 'images').glob('*.jpg')))} files, {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()

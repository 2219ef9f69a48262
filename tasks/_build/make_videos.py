"""Rebuild the bundled data of the offline video tasks (mp4 clips + JSON-lines), byte for byte.

Run from the repository root:  python tasks/_build/make_videos.py
The outputs (tasks/dymu_offline/videos/*.mp4, video_pope.jsonl, video_qa.jsonl and
videos.json) are committed, so users never need to run this; it exists so the data can be
audited and regenerated. Regenerating with the encoder named in videos.json reproduces every
file exactly (tests/offline/test_video_tasks.py checks it).

Clips (``dymu_eval.offline.clips``, 16 frames of 224x224 at 8 fps):
- 27 shape clips, three of each (appear | move | recolour) x (plain | busy | noisy) background;
- 9 camera clips, a pan across or a zoom into each photo of the image tasks.
So the clips range from a flat colour with one shape to a sweep over a star field.
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from dymu_eval.offline import clips
from dymu_eval.offline.mp4 import encoder_signature, write_mp4
from dymu_eval.offline.synthetic import BACKGROUNDS, COLOURS, SHAPES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_data import PHOTOS

OUT = Path(__file__).resolve().parent.parent / "dymu_offline"
SEED = 20261201
REPEATS = 3
TEMPLATE = "Is there a {colour} {shape} in the video?"
PHOTO_TEMPLATE = "Is there a {obj} in the video?"


def _absent(rng: random.Random, seen: set[tuple[str, str]]) -> tuple[str, str]:
    """An absent (shape, colour), drawn uniformly: POPE's "random" negatives."""
    return rng.choice([(s, c) for s in SHAPES for c in COLOURS if (s, c) not in seen])


def _yes_no(rng: random.Random, facts: clips.ClipFacts) -> list[tuple[str, str]]:
    """One present and one absent object; the present one is the event when there is one."""
    if facts.kind == "appear":
        present = facts.last()[0]
    elif facts.kind == "recolour":
        present = rng.choice([facts.first()[0], facts.last()[0]])
    else:
        present = rng.choice(facts.first())
    shape, colour = _absent(rng, facts.seen())
    return [(TEMPLATE.format(colour=present.colour, shape=present.shape), "yes"),
            (TEMPLATE.format(colour=colour, shape=shape), "no")]


def _short(facts: clips.ClipFacts) -> list[tuple[str, str, str]]:
    """(question, answer, category): what appears, colours, counts."""
    if facts.kind == "appear":
        o = facts.last()[0]
        return [("What shape appears in the video?", o.shape, "appear"),
                (f"What color is the {o.shape}?", o.colour, "color")]
    if facts.kind == "recolour":
        before, after = facts.first()[0], facts.last()[0]
        return [(f"What color is the {before.shape} at the start of the video?", before.colour, "color"),
                (f"What color is the {after.shape} at the end of the video?", after.colour, "color")]
    objs = facts.first()
    out = [("How many shapes are there?", str(len(objs)), "count")]
    if len({o.shape for o in objs}) == len(objs):
        o = objs[0]
        out.append((f"What color is the {o.shape}?", o.colour, "color"))
    return out


def build(out: Path = OUT) -> dict[str, list[dict]]:
    """Write the clips into ``out/videos``; return the task rows, clip records and (in memory) facts."""
    from dymu_eval.offline.photos import sample_photos

    rng = random.Random(SEED)
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    for old in videos.glob("*.mp4"):
        old.unlink()
    pope, qa, records, truth = [], [], [], {}

    def add(name: str, frames, source: str, kind: str, yes_no, short, facts=None) -> None:
        file = f"videos/{name}.mp4"
        write_mp4(frames, out / file, clips.FPS)
        truth[file] = facts
        records.append({"video": file, "kind": kind, "source": source, "frames": len(frames), "fps": clips.FPS,
                            "complexity": round(clips.complexity(frames), 4)})
        pope.extend({"video": file, "question": q, "answer": a, "category": kind, "source": source} for q, a in yes_no)
        qa.extend({"video": file, "question": q, "answer": a, "category": c, "source": source} for q, a, c in short)

    k = 0
    for _ in range(REPEATS):
        for kind in clips.SHAPE_KINDS:
            for background in BACKGROUNDS:
                frames, facts = clips.shape_clip(rng.randrange(1 << 30), kind, background)
                add(f"clip_{k:02d}_{kind}_{background}", frames, background, kind, _yes_no(rng, facts), _short(facts),
                    facts)
                k += 1
    photos = sample_photos(list(PHOTOS))
    for i, (name, (present, absent, short)) in enumerate(PHOTOS.items()):
        kind = clips.CAMERA_KINDS[i % 2]
        yes_no = [(PHOTO_TEMPLATE.format(obj=rng.choice(present)), "yes"),
                  (PHOTO_TEMPLATE.format(obj=rng.choice(absent)), "no")]
        short_rows = [(short[0].replace("picture", "video"), short[1], "photo")] if short else []
        add(f"clip_{k:02d}_{kind}_{name}", clips.photo_clip(photos[name], kind), "photo", kind, yes_no, short_rows)
        k += 1

    for prefix, rows in (("video_pope", pope), ("video_qa", qa)):
        rng.shuffle(rows)
        for i, row in enumerate(rows):
            row["question_id"] = f"{prefix}_{i:03d}"
    return {"video_pope": pope, "video_qa": qa, "clips": records, "facts": truth}


def write(out: Path = OUT) -> dict[str, list[dict]]:
    """:func:`build`, then the JSON-lines files and ``videos.json`` (encoder and clip records)."""
    data = build(out)
    for task in ("video_pope", "video_qa"):
        with open(out / f"{task}.jsonl", "w") as f:
            f.writelines(json.dumps(row, sort_keys=True) + "\n" for row in data[task])
    info = {"encoder": encoder_signature(), "frame_size": clips.FRAME_SIZE, "clips": data["clips"]}
    (out / "videos.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    return data


def main() -> None:
    data = write()
    for task in ("video_pope", "video_qa"):
        print(f"{task}: {len(data[task])} rows")
    files = list((OUT / "videos").glob("*.mp4"))
    print(f"videos: {len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()

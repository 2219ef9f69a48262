"""Baseline yes/no accuracy of the stock micro OneVision on the offline video POPE-style task.

    python -m dymu_eval.offline.video_eval            # writes dymu_eval/data/micro_onevision/baseline.json

Why: the micro OneVision reuses the micro LLaVA's trained weights, which never saw video; this
measures whether that is good enough (the aim is at least 75%) with the stock transformers
model, before any token reduction. Frames are sampled as lmms-eval's ``llava_hf`` samples them
(``np.linspace(0, n - 1, frames, dtype=int)``). The questions about one clip are packed behind
one copy of the clip (``packing.py``: exactly the logits of separate prompts), and the answer is
the larger of the "Yes" and "No" logits at the first answer position; the record also says how
often one of them is the greedy token there (so how often this equals greedy decoding).
"""
from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dymu_eval.offline.mp4 import read_mp4
from dymu_eval.offline.packing import pack, packed_hidden

SUFFIX = "\nAnswer the question using a single word or phrase."  # the task's post_prompt


def sample_frames(frames: list[np.ndarray], count: int) -> np.ndarray:
    """``count`` frames picked uniformly, as lmms-eval's ``llava_hf`` picks them."""
    return np.stack([frames[i] for i in np.linspace(0, len(frames) - 1, count, dtype=int)])


@torch.no_grad()
def video_yes_no(model, processor, rows: list[dict], root: Path, frames: int) -> list[dict]:
    """One record per row: the model's yes/no answer and whether it is the greedy token."""
    tok = processor.tokenizer
    yes, no = (tok(w, add_special_tokens=False)["input_ids"][0] for w in ("Yes", "No"))
    clips: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        clips[row["video"]].append(row)
    out = []
    for video, questions in tqdm(sorted(clips.items()), desc="clips", unit="clip"):
        pixels = processor.video_processor(videos=[sample_frames(read_mp4(root / video), frames)],
                                           return_tensors="pt")["pixel_values_videos"]
        feats = model.model.get_video_features(
            pixel_values_videos=pixels, vision_feature_layer=model.config.vision_feature_layer,
            vision_feature_select_strategy=model.config.vision_feature_select_strategy).pooler_output[0]
        packed = pack(tok, [(q["question"] + SUFFIX, q["answer"].capitalize()) for q in questions],
                      feats.shape[0], processor.video_token)
        hidden = packed_hidden(model.model.language_model, feats, packed, model.config.video_token_id)
        first = torch.stack([(packed.branch_of == k).nonzero()[0, 0] for k in range(len(questions))])
        logits = model.lm_head(hidden[packed.predict_at[first]])
        for q, row_logits in zip(questions, logits):
            said = "yes" if row_logits[yes] > row_logits[no] else "no"
            out.append({**q, "prediction": said, "greedy_is_yes_or_no": int(row_logits.argmax()) in (yes, no)})
    return out


def summary(records: list[dict]) -> dict:
    """Accuracy overall, by clip kind, by background/photo and by true answer."""
    def acc(rs: list[dict]) -> dict:
        return {"accuracy": round(float(np.mean([r["prediction"] == r["answer"] for r in rs])), 4), "n": len(rs),
                "yes_ratio": round(float(np.mean([r["prediction"] == "yes" for r in rs])), 4)}

    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        for key in (f"kind={r['category']}", f"source={r['source']}", f"answer={r['answer']}"):
            groups[key].append(r)
    yes_or_no = float(np.mean([r["greedy_is_yes_or_no"] for r in records]))
    return {**acc(records), "greedy_is_yes_or_no": round(yes_or_no, 4),
            "by": {k: acc(v) for k, v in sorted(groups.items())}}


def main(argv: list[str] | None = None) -> int:
    from dymu_eval.offline.micro_onevision import load_micro_onevision
    from dymu_eval.paths import tasks_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=8, help="frames per clip (lmms-eval's max_frames_num)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "data" /
                        "micro_onevision" / "baseline.json")
    args = parser.parse_args(argv)
    started = time.time()
    model, processor = load_micro_onevision()
    root = tasks_dir() / "dymu_offline"
    rows = [json.loads(line) for line in (root / "video_pope.jsonl").read_text().splitlines()]
    result = {"task": "dymu_video_pope_offline", "model": "micro OneVision (stock transformers), shipped projector",
              "frames": args.frames, **summary(video_yes_no(model, processor, rows, root, args.frames)),
              "minutes": round((time.time() - started) / 60, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("accuracy", "n", "yes_ratio")}), f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

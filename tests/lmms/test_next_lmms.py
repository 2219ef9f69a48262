"""The LLaVA-NeXT models through lmms-eval's Python API: at level none they answer exactly as
lmms-eval's own ``llava_hf`` on images of every grid shape (simple and chat paths), ``dymu_llava``
dispatches a NeXT checkpoint to the NeXT family, the ``<method>_llava_next`` names exist, and the
reductions record their per-crop counts. Answers are compared in float64 (dtype=float64 on both sides),
where rounding cannot flip a greedy pick between two computations that agree in mathematics."""
import json
from pathlib import Path

import pytest

from tests.factories.media import random_image

TASKS = Path(__file__).resolve().parents[2] / "tasks"
TASK = "dymu_test_next_shapes"
# (H, W): the 2x2, 1x3, 3x1, 1x2 and 2x1 grids of the tiny NeXT's pinpoints
SIZES = [(48, 64), (40, 120), (120, 40), (30, 30), (60, 30)]
_YAML = f"""task: {TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    test: shapes.jsonl
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 5
  temperature: 0
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 0.0
"""
_UTILS = '''import os
from PIL import Image
HERE = os.path.dirname(os.path.abspath(__file__))


def doc_to_visual(doc):
    return [Image.open(os.path.join(HERE, doc["image"])).convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]
'''


@pytest.fixture(scope="module")
def evaluate(tmp_path_factory):
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    root = tmp_path_factory.mktemp("next_tasks")
    rows = []
    for i, (h, w) in enumerate(SIZES):
        random_image(h, w, i).save(root / f"img{i}.png")
        rows.append({"image": f"img{i}.png", "question": "what color is the square ?", "answer": "red"})
    (root / "shapes.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (root / "utils.py").write_text(_UTILS)
    (root / f"{TASK}.yaml").write_text(_YAML)
    manager = TaskManager("ERROR", include_path=[str(TASKS), str(root)], include_defaults=False)

    def run(model, model_args, force_simple=False, limit=len(SIZES)):
        return simple_evaluate(model=model, model_args=model_args, tasks=[TASK], limit=limit, device="cpu",
                               task_manager=manager, log_samples=True, force_simple=force_simple, verbosity="ERROR")
    return run


def _responses(results):
    return [s["filtered_resps"] for s in sorted(results["samples"][TASK], key=lambda r: r["doc_id"])]


def _stats(folder):
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl")) for line in f.read_text().splitlines()]


@pytest.mark.parametrize("simple", [True, False], ids=["simple", "chat"])
def test_level_none_equals_llava_hf(evaluate, tiny_next, tmp_path, simple):
    ours = evaluate("dymu_llava_next", f"pretrained={tiny_next},level=none,device_map=cpu,dtype=float64,"
                    f"stats_dir={tmp_path}", force_simple=simple)
    ref = evaluate("llava_hf", f"pretrained={tiny_next},device_map=cpu,dtype=float64", force_simple=simple)
    kind = "" if simple else "Chat"
    assert ours["config"]["model_backend"] == (f"dymu_eval.lmms.model.DymuLlavaNext{kind} "
                                               f"({'simple' if simple else 'chat'})")
    got = _responses(ours)
    assert got == _responses(ref)
    assert len({str(r) for r in got}) > 1, "the tiny model should answer differently"
    rows = _stats(tmp_path)
    assert len(rows) == len(SIZES) and {s["family"] for s in rows} == {"llava_next"}
    for s in rows:
        assert s["visual_rows"] == s["visual_positions"] == sum(s["image_positions"])


def test_dymu_llava_dispatches_a_next_checkpoint_and_the_names_exist(tiny_next, tmp_path):
    from lmms_eval.models import get_model

    from dymu_eval.lmms.names import model_names
    from dymu_eval.methods import METHODS

    names = model_names()
    for method in METHODS:
        if METHODS[method].model_name:
            assert names[f"{method}_llava_next"] == (method, "llava_next")
    args = f"pretrained={tiny_next},method=tome,r=3,stats_dir={tmp_path}"
    generic = get_model("dymu_llava", force_simple=True).create_from_arg_string(args, {"batch_size": "1",
                                                                                     "device": "cpu"})
    assert generic.args.family == "llava_next" and type(generic.pipe).__name__ == "NextPipeline"


@pytest.mark.parametrize("model,extra,per_crop", [("tome_llava_next", "r=3", 16 - 2 * 3),
                                                  ("visionzip_llava_next", "dominant=4,contextual=2", 6)])
def test_reductions_record_per_crop_counts_and_both_budgets(evaluate, tiny_next, tmp_path, model, extra, per_crop):
    evaluate(model, f"pretrained={tiny_next},device_map=cpu,batch_size=2,stats_dir={tmp_path},{extra}", limit=3,
             force_simple=True)
    rows = _stats(tmp_path)
    assert len(rows) == 3
    for s in rows:
        assert s["crop_tokens"] == [per_crop] * s["crops"] and s["paper_visual_tokens"] == 5 * per_crop
        assert s["visual_rows"] < s["visual_positions"] and s["image_rows"] == [s["visual_rows"]]

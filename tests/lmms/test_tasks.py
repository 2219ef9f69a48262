"""The bundled offline tasks: well-formed data, MME pairing, small images, no name clashes."""
import collections
import json
from pathlib import Path

import pytest
import yaml

from dymu_eval.images import load_image
from dymu_eval.paths import tasks_dir

TASK_DIR = tasks_dir() / "dymu_offline"
FILES = {"dymu_pope_offline": "pope.jsonl", "dymu_mme_offline": "mme.jsonl", "dymu_gqa_offline": "gqa.jsonl"}


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def _rows(name):
    return [json.loads(line) for line in (TASK_DIR / FILES[name]).read_text().splitlines()]


def _task_names(root: Path) -> set[str]:
    names = set()
    for f in root.rglob("*.yaml"):
        try:
            cfg = yaml.load(f.read_text(), Loader=_Loader)
        except yaml.YAMLError:
            continue
        if isinstance(cfg, dict):
            for key in ("task", "group"):
                if isinstance(cfg.get(key), str):
                    names.add(cfg[key])
    return names


def test_names_are_prefixed_and_do_not_clash_with_builtin_tasks():
    import lmms_eval

    ours = _task_names(tasks_dir())
    assert set(FILES) | {"dymu_offline"} <= ours
    assert all(n.startswith("dymu_") for n in ours)
    builtin = _task_names(Path(lmms_eval.__file__).parent / "tasks")
    assert len(builtin) > 100 and not ours & builtin


@pytest.mark.parametrize("name", list(FILES))
def test_rows_reference_readable_images_and_valid_answers(name):
    rows = _rows(name)
    assert 40 <= len(rows) <= 80
    for row in rows:
        assert {"question_id", "question", "answer", "image_file"} <= set(row)
        img = load_image(TASK_DIR / row["image_file"])
        assert min(img.size) >= 64
    cfg = yaml.load((TASK_DIR / f"{name}.yaml").read_text(), Loader=_Loader)
    assert cfg["task"] == name and cfg["dataset_kwargs"]["data_files"]["test"] == FILES[name]
    if name != "dymu_gqa_offline":
        assert {r["answer"].lower() for r in rows} == {"yes", "no"}


def test_mme_has_exactly_two_adjacent_questions_per_image_one_yes_one_no():
    rows = _rows("dymu_mme_offline")
    by_id = collections.defaultdict(list)
    for i, r in enumerate(rows):
        by_id[r["question_id"]].append((i, r))
    for qid, items in by_id.items():
        assert len(items) == 2, qid
        (i, a), (j, b) = items
        assert j == i + 1 and a["image_file"] == b["image_file"] and a["category"] == b["category"]
        assert sorted([a["answer"], b["answer"]]) == ["No", "Yes"]
    from lmms_eval.tasks.mme.utils import eval_type_dict

    assert {r["category"] for r in rows} <= set(eval_type_dict["Perception"])


def test_images_are_small_jpegs_of_photos_and_scenes_of_every_background():
    files = sorted((TASK_DIR / "images").iterdir())
    assert all(f.suffix == ".jpg" for f in files)
    assert sum(f.stat().st_size for f in files) <= 3_000_000
    names = [f.name for f in files]
    for kind in ("plain", "busy", "noisy", "photo"):
        assert any(kind in n for n in names), kind
    used = {r["image_file"] for name in FILES for r in _rows(name)}
    assert used == {f"images/{n}" for n in names}, "every bundled image is used and every used image is bundled"

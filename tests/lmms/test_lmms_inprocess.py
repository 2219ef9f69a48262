"""The plugin through lmms-eval's Python API (one task index for all runs, so they are quick):
every reduction runs and records what it did; construction refuses bad settings clearly."""
import json
import shutil

import pytest

from dymu_eval.errors import ConfigError, InputImageError, ThresholdCacheError
from tests.factories import TASKS

TASKS_3 = ["dymu_pope_offline", "dymu_mme_offline", "dymu_gqa_offline"]


@pytest.fixture(scope="module")
def extra_tasks(tmp_path_factory):
    """A copy of the POPE task with a broken image, and a multiple-choice (loglikelihood) task."""
    root = tmp_path_factory.mktemp("extra_tasks")
    src = TASKS / "dymu_offline"
    broken = root / "broken"
    shutil.copytree(src / "images", broken / "images")
    shutil.copy(src / "utils.py", broken / "utils.py")
    rows = (src / "pope.jsonl").read_text().splitlines()
    (broken / "pope.jsonl").write_text("\n".join(rows[:4]) + "\n")
    (broken / json.loads(rows[1])["image_file"]).write_bytes(b"not an image at all")
    yaml_text = (src / "dymu_pope_offline.yaml").read_text()
    (broken / "broken.yaml").write_text(yaml_text.replace("task: dymu_pope_offline", "task: dymu_test_broken_pope"))
    ll = root / "ll"
    shutil.copytree(broken, ll)
    (ll / "broken.yaml").unlink()
    broken_image = json.loads(rows[1])["image_file"]
    shutil.copy(src / broken_image, ll / broken_image)
    (ll / "ll.yaml").write_text(
        "task: dymu_test_loglik\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: pope.jsonl\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_visual: !function utils.doc_to_visual\n"
        "doc_to_text: !function utils.doc_to_text\ndoc_to_target: answer\ndoc_to_choice: ['yes', 'no']\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "metadata:\n  version: 0.0\n")
    return root


@pytest.fixture(scope="module")
def evaluate(extra_tasks):
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    # only the project's tasks: indexing lmms-eval's own hundreds of task folders takes seconds
    manager = TaskManager("ERROR", include_path=[str(TASKS), str(extra_tasks)], include_defaults=False)

    def run(model, model_args, tasks=TASKS_3, limit=4, force_simple=False):
        return simple_evaluate(model=model, model_args=model_args, tasks=list(tasks), limit=limit, device="cpu",
                               task_manager=manager, log_samples=True, force_simple=force_simple, verbosity="ERROR")
    return run


def _stats(folder):
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl")) for line in f.read_text().splitlines()]


def _responses(results):
    return {t: [s["filtered_resps"] for s in sorted(rows, key=lambda r: r["doc_id"])]
            for t, rows in results["samples"].items()}


def test_simple_variant_equals_llava_hf_simple(evaluate, tiny_llava, tmp_path):
    """Both in float64, where two computations that agree in mathematics cannot pick different greedy
    tokens (rounding there is ~1e-13 of a logit, far below any top-2 gap)."""
    ours = evaluate("dymu_llava", f"pretrained={tiny_llava},level=none,device_map=cpu,dtype=float64,"
                    f"stats_dir={tmp_path}", force_simple=True)
    ref = evaluate("llava_hf", f"pretrained={tiny_llava},device_map=cpu,dtype=float64", force_simple=True)
    assert ours["config"]["model_backend"] == "dymu_eval.lmms.model.DymuLlava (simple)"
    assert _responses(ours) == _responses(ref)


def test_reductions_run_and_record_their_token_counts(evaluate, tiny_llava, tiny_thresholds, tmp_path):
    runs = {
        "none": ("dymu_llava", "level=none"),
        "dymu": ("dymu_llava", f"thresholds={tiny_thresholds}"),
        "dymu_novtu": ("dymu_llava", f"thresholds={tiny_thresholds},vtu=false"),
        "tome": ("tome_llava", "r=5"),
        "fastv": ("fastv_llava", "fastv_k=1,fastv_ratio=0.5"),
    }
    stats = {}
    for name, (model, extra) in runs.items():
        folder = tmp_path / name
        out = evaluate(model, f"pretrained={tiny_llava},device_map=cpu,batch_size=2,stats_dir={folder},{extra}",
                       limit=2)
        assert set(out["results"]) >= set(TASKS_3)
        stats[name] = _stats(folder)
        assert len(stats[name]) == 6, f"{name}: one stats row per request"
    before = {(s["task"], s["doc_id"]): s["visual_tokens_after"] for s in stats["none"]}
    for s in stats["dymu"]:
        assert s["visual_tokens_after"] < before[(s["task"], s["doc_id"])] == s["visual_tokens_before"]
        assert s["method"] == "dymu" and s["vtu"] is True and s["thresholds"].endswith("__low")
        assert s["unique_len"] < s["virtual_len"]
    with_vtu = {(s["task"], s["doc_id"]): s for s in stats["dymu"]}
    for s in stats["dymu_novtu"]:  # same merged rows, but only they enter the LLM, at consecutive positions
        other = with_vtu[(s["task"], s["doc_id"])]
        assert s["vtu"] is False and s["unique_len"] == other["unique_len"] == s["virtual_len"] < other["virtual_len"]
    for s in stats["tome"]:
        assert s["visual_tokens_after"] == 64 - 5 * 3 and s["vtu"] is False and s["r"] == 5
    for s in stats["fastv"]:
        assert s["visual_tokens_after"] == 32 and (s["fastv_k"], s["fastv_ratio"]) == (1, 0.5)
    fields = ("encoder_ms", "prefill_ms", "decode_ms", "new_tokens", "image_bytes_per_pixel", "run_stamp", "pretrained")
    for rows in stats.values():
        for s in rows:
            assert all(s[f] is not None for f in fields)


def test_selection_baselines_run_and_record_the_counts_their_settings_predict(evaluate, tiny_llava, tmp_path):
    """random / pool / visionzip through their lmms-eval model names (tiny LLaVA: 8x8 = 64 patches + CLS)."""
    runs = {
        "random_count": ("random_llava", "keep=16,seed=1", 16, None),
        "random_fraction": ("random_llava", "keep=0.125", 8, None),
        "pool": ("pool_llava", "pool_factor=2", 16, None),
        "pool_vtu": ("pool_llava", "pool_factor=4,vtu=true", 4, 64),
        "visionzip": ("visionzip_llava", "dominant=10,contextual=4", 14, None),  # CLS + 9 patches + 4 contextual
        "visionzip_vtu": ("visionzip_llava", "dominant=10,contextual=4,vtu=true", 13, 64),  # CLS has no position
        "method_arg": ("dymu_llava", "method=pool,pool_factor=2", 16, None),
    }
    for name, (model, extra, tokens, positions) in runs.items():
        folder = tmp_path / name
        out = evaluate(model, f"pretrained={tiny_llava},device_map=cpu,batch_size=2,stats_dir={folder},{extra}",
                       limit=2)
        assert set(out["results"]) >= set(TASKS_3)
        rows = _stats(folder)
        assert len(rows) == 6
        for s in rows:
            assert s["visual_tokens_before"] == 64 and s["visual_tokens_after"] == tokens, (name, s)
            text = s["unique_len"] - tokens
            assert s["virtual_len"] == (text + positions if positions else s["unique_len"]), (name, s)
            assert s["method"] == ("pool" if model == "dymu_llava" else model.split("_")[0])
        if model == "random_llava":
            assert rows[0]["seed"] == (1 if name == "random_count" else 0) and rows[0]["vtu"] is False
        if model == "visionzip_llava":
            assert (rows[0]["dominant"], rows[0]["contextual"]) == (10, 4)


def test_loglikelihood_through_lmms_eval(evaluate, tiny_llava, tmp_path):
    out = evaluate("dymu_llava", f"pretrained={tiny_llava},level=none,device_map=cpu,stats_dir={tmp_path}",
                   tasks=["dymu_test_loglik"], limit=2, force_simple=True)
    samples = out["samples"]["dymu_test_loglik"]
    # one (negative log-likelihood, greedy) per choice: lmms-eval picks the argmin
    nll = [[r[0][0] if isinstance(r[0], (list, tuple)) else r[0] for r in s["resps"]] for s in samples]
    assert all(len(x) == 2 and min(x) > 0 for x in nll)
    gold = [["yes", "no"].index(s["target"]) if isinstance(s["target"], str) else s["target"] for s in samples]
    acc = sum(min(range(2), key=x.__getitem__) == g for x, g in zip(nll, gold)) / len(gold)
    assert out["results"]["dymu_test_loglik"]["acc,none"] == acc
    assert [s["request"] for s in _stats(tmp_path)] == ["loglikelihood"] * 4


def test_unreadable_image_in_a_task_names_the_file(evaluate, tiny_llava, extra_tasks, tmp_path):
    with pytest.raises(InputImageError) as e:
        evaluate("dymu_llava", f"pretrained={tiny_llava},level=none,device_map=cpu,stats_dir={tmp_path}",
                 tasks=["dymu_test_broken_pope"])
    assert str(extra_tasks / "broken" / "images") in str(e.value) and "sample pope_001" in str(e.value)


def _construct(name, args):
    from lmms_eval.models import get_model

    return get_model(name).create_from_arg_string(args, {"batch_size": "1", "device": "cpu"})


def test_construction_refuses_bad_settings(tiny_llava, tmp_path, monkeypatch):
    monkeypatch.setenv("DYMU_EVAL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match="unknown level='ultra'"):
        _construct("dymu_llava", f"pretrained={tiny_llava},level=ultra")
    with pytest.raises(ConfigError, match="valid model_args are"):
        _construct("tome_llava", f"pretrained={tiny_llava},r=4,bogus=1")
    with pytest.raises(ThresholdCacheError) as e:
        _construct("dymu_llava", f"pretrained={tiny_llava},level=mid,thresholds=pixmo_cap,stats_dir={tmp_path}")
    msg = str(e.value)
    assert "pixmo_cap" in msg and "level mid" in msg and f"dymu-eval calibrate --encoder {tiny_llava}" in msg
    with pytest.raises(ThresholdCacheError, match="no such file"):
        _construct("dymu_llava", f"pretrained={tiny_llava},thresholds={tmp_path / 'missing.json'}")
    with pytest.raises(ConfigError, match="fastv_k=9"):
        _construct("fastv_llava", f"pretrained={tiny_llava},fastv_k=9,stats_dir={tmp_path}")
    with pytest.raises(ConfigError, match="pool_factor=3 does not divide the 8x8 patch grid"):
        _construct("pool_llava", f"pretrained={tiny_llava},pool_factor=3,stats_dir={tmp_path}")
    with pytest.raises(ConfigError, match="keep=65 is more than the 64 visual tokens"):
        _construct("random_llava", f"pretrained={tiny_llava},keep=65,stats_dir={tmp_path}")
    with pytest.raises(ConfigError, match="dominant=60 \\+ contextual=10 is more than the 65 tokens"):
        _construct("visionzip_llava", f"pretrained={tiny_llava},dominant=60,contextual=10,stats_dir={tmp_path}")


def test_threshold_cache_key_is_found_by_checkpoint_name(tiny_llava, tiny_thresholds, tmp_path, monkeypatch):
    from dymu_eval.thresholds import load_record, save_record, user_thresholds_dir

    monkeypatch.setenv("DYMU_EVAL_CACHE", str(tmp_path / "cache"))
    record = load_record(tiny_thresholds)
    save_record(record, user_thresholds_dir() / f"{record.key}.json")
    model = _construct("dymu_llava", f"pretrained={tiny_llava},thresholds=tiny_offline,stats_dir={tmp_path}")
    assert model.pipe.reduction.thresholds_key == record.key

"""``budget=``: the papers' LLaVA-1.5 budgets map to each method's published settings, a fraction scales
to the model at hand, explicit arguments override it, and what ran is recorded for the tables."""
from __future__ import annotations

import pytest

from dymu_eval import api
from dymu_eval.errors import ConfigError
from dymu_eval.methods import METHODS
from dymu_eval.methods.budget import BudgetTarget, recorded_settings
from dymu_eval.methods.settings import resolve_method_args
from dymu_eval.report.labels import agrees, describe, finalize, parse_model_args

FIXED_BUDGET = ("random", "pool", "fastv", "pdrop", "dart", "visionzip")


def _fastv_layer_average(k: int, ratio: float, n: int = 576, layers: int = 32) -> float:
    """FastV's tokens as the peer tables count them: K layers on all n, the rest on the kept ones."""
    from dymu_eval.language.fastv import FastV

    return (k * n + (layers - k) * FastV(k, ratio).n_keep(n)) / layers


def _pdrop_layer_average(stages: tuple[int, ...], ratios: tuple[float, ...], n: int = 576, layers: int = 32):
    """PyramidDrop's official rule restated: after stage i, int(n * ratio_i) image tokens."""
    bounds = [*stages, layers]
    kept = [n * stages[0]] + [int(n * r) * (b - a) for r, a, b in zip(ratios, bounds, bounds[1:])]
    return sum(kept) / layers


def test_the_budget_methods_are_the_fixed_budget_ones() -> None:
    with_budget = {m for m in METHODS if METHODS[m].budget is not None}
    assert set(FIXED_BUDGET) <= with_budget
    assert not {"dymu", "tome", "none"} & with_budget  # dynamic merging sets its own count


@pytest.mark.parametrize("budget,dominant,contextual,dart_budget", [
    (192, 162, 30, 192), (128, 108, 20, 128), (64, 54, 10, 64)])
def test_paper_budgets_are_the_published_settings(budget, dominant, contextual, dart_budget) -> None:
    vz = resolve_method_args("visionzip", {"budget": budget})
    assert (vz["dominant"], vz["contextual"]) == (dominant, contextual)  # VisionZip's Table 1
    dart = resolve_method_args("dart", {"budget": budget})
    from dymu_eval.language.dart import Dart

    assert Dart(dart["dart_layer"], dart["dart_budget"]).picks(576) == dart_budget  # max_num_trunction
    assert dart["dart_layer"] == 2
    assert resolve_method_args("random", {"budget": budget})["keep"] == budget
    fastv = resolve_method_args("fastv", {"budget": budget})
    assert fastv["fastv_k"] == 2 and abs(_fastv_layer_average(2, fastv["fastv_ratio"]) - budget) <= 0.5
    pdrop = resolve_method_args("pdrop", {"budget": budget})
    assert pdrop["pdrop_layers"] == (2, 10, 20)
    assert abs(_pdrop_layer_average(pdrop["pdrop_layers"], pdrop["pdrop_ratios"]) - budget) <= 1.0


def test_fastv_budgets_keep_the_counts_the_peer_tables_imply() -> None:
    """k = (32 B - 2 * 576) / 30 after layer 2: 166.4 / 98.1 / 29.9 for 192 / 128 / 64."""
    from dymu_eval.language.fastv import FastV

    kept = [FastV(2, resolve_method_args("fastv", {"budget": b})["fastv_ratio"]).n_keep(576) for b in (192, 128, 64)]
    assert kept == [166, 98, 30]


def test_pool_takes_the_nearest_grid_factor() -> None:
    assert [resolve_method_args("pool", {"budget": b})["pool_factor"] for b in (192, 128, 64, 36)] == [2, 2, 3, 4]


def test_explicit_arguments_override_the_budget() -> None:
    vz = resolve_method_args("visionzip", {"budget": 192, "contextual": 5})
    assert (vz["dominant"], vz["contextual"]) == (162, 5)
    assert vz["budget"].given == frozenset({"contextual"})
    fastv = resolve_method_args("fastv", {"budget": "64", "fastv_ratio": 0.5})
    assert fastv["fastv_ratio"] == 0.5


def test_a_fraction_scales_to_the_model_at_hand() -> None:
    vz = METHODS["visionzip"].budget(BudgetTarget(resolve_method_args("visionzip", {"budget": "0.25"})["budget"],
                                                  729, 28))
    assert int(vz["dominant"]) + int(vz["contextual"]) == round(0.25 * 729)
    pdrop = resolve_method_args("pdrop", {"budget": "0.25"})
    assert abs(_pdrop_layer_average(pdrop["pdrop_layers"], pdrop["pdrop_ratios"]) - 144) <= 1.0


@pytest.mark.parametrize("method,given,needle", [
    ("dymu", {"budget": 192}, "budget do not apply to method=dymu"),
    ("random", {"budget": 0}, "budget"),
    ("random", {"budget": "many"}, "budget"),
    ("pdrop", {"budget": "0.95"}, "budget=0.95"),
    ("visionzip", {"budget": 1}, "budget=1"),
])
def test_bad_budgets_are_one_line(method, given, needle) -> None:
    with pytest.raises(ConfigError, match=needle) as info:
        resolve_method_args(method, given)
    assert "\n" not in str(info.value)


def test_budgets_are_read_against_the_loaded_model(tiny_llava) -> None:
    """A fraction becomes tokens of this model's images; a count above them names the budget."""
    vlm = api.load(str(tiny_llava), method="random", budget=0.25, device_map="cpu")
    patches = vlm.pipe.runner.num_patches()
    red = vlm.pipe.reduction
    assert red.selector.keep == round(0.25 * patches) and red.settings["keep"] == round(0.25 * patches)
    vlm = api.load(str(tiny_llava), method="visionzip", budget=0.5, device_map="cpu")
    assert vlm.pipe.reduction.selector.dominant + vlm.pipe.reduction.selector.contextual == round(0.5 * patches)
    with pytest.raises(ConfigError, match=f"budget=192: above the {patches} visual tokens per image"):
        api.load(str(tiny_llava), method="random", budget=192, device_map="cpu")


def test_stats_and_tables_record_the_budget() -> None:
    values = resolve_method_args("dart", {"budget": 128, "dart_layer": 3})
    row = {"method": "dart", **recorded_settings(values)}
    assert row["budget"] == "128" and row["budget_overrides"] == "dart_layer" and row["dart_budget"] == 0.222222
    from_stats = describe("dart_llava", row)
    from_args = describe("dart_llava", parse_model_args("pretrained=x,budget=128,dart_layer=3"))
    assert from_stats["level"] == from_args["level"] == "budget 128 dart_layer=3"
    assert agrees(from_args, from_stats)
    assert finalize("dart_llava", "f", from_args).label() == "DART budget 128 dart_layer=3"
    plain = recorded_settings(resolve_method_args("visionzip", {"budget": "0.25"}))
    assert describe("visionzip_llava", {"method": "visionzip", **plain})["level"] == "budget 0.25"


def test_the_lmms_model_records_what_the_budget_resolved_to(tiny_llava, tmp_path) -> None:
    import json

    from lmms_eval.models import get_model

    model = get_model("dymu_llava").create_from_arg_string(
        f"pretrained={tiny_llava},method=visionzip,budget=0.5,contextual=3,stats_dir={tmp_path}",
        {"batch_size": "1", "device": "cpu"})
    row = json.loads(model.stats.line({"task": "t", "doc_id": 0}))
    patches = model.pipe.runner.num_patches()
    assert (row["budget"], row["budget_overrides"], row["contextual"]) == ("0.5", "contextual", 3)
    assert row["dominant"] == round(round(0.5 * patches) * 162 / 192)  # the budget's 27:5 split; 3 overrides 5
    assert describe("dymu_llava", row)["level"] == "budget 0.5 contextual=3"

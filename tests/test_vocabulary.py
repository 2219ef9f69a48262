"""One vocabulary: the model_args parser and the report read the same table, without torch."""
import subprocess
import sys

import pytest

from dymu_eval.errors import ConfigError
from dymu_eval.lmms.args import VALID_ARGS, parse_model_args
from dymu_eval.report.labels import describe, finalize
from dymu_eval.vocabulary import METHOD_SPECS, MODEL_DEFAULTS, REDUCTION_ARGS, check_fastv


def test_vocabulary_imports_no_torch():
    code = "import sys, dymu_eval.vocabulary, dymu_eval.report.labels; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_every_reduction_argument_is_documented_and_typed():
    assert set(REDUCTION_ARGS) <= set(VALID_ARGS)


@pytest.mark.parametrize("model", sorted(MODEL_DEFAULTS))
def test_parser_and_report_agree_on_each_models_defaults(model):
    given = {"pretrained": "x", "r": 4} if MODEL_DEFAULTS[model]["method"] == "tome" else {"pretrained": "x"}
    args = parse_model_args(given, model=model)
    spec = METHOD_SPECS[args.method]
    assert args.method == MODEL_DEFAULTS[model]["method"]
    for name, default in spec.args.items():
        if default is not None and name != "level":
            assert getattr(args, name) == default
    cfg = finalize(model, "fam", describe(model, {k: v for k, v in given.items() if k != "pretrained"}))
    assert cfg.method == spec.label
    if "vtu" in spec.args:
        assert cfg.vtu == ("yes" if args.vtu else "no")


@pytest.mark.parametrize("k, ratio, layers, word", [
    (0, 0.5, None, "fastv_k=0"), (4, 0.5, 4, "fastv_k=4"), (True, 0.5, None, "fastv_k"),
    (2, 1.0, None, "fastv_ratio=1.0"), (2, -0.1, 8, "fastv_ratio"),
])
def test_fastv_bounds_are_checked_in_one_place(k, ratio, layers, word):
    with pytest.raises(ConfigError, match=word):
        check_fastv(k, ratio, layers)
    check_fastv(2, 0.5, 4)

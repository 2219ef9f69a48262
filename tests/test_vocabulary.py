"""One vocabulary: the model_args parser and the report read the same registry, without torch."""
import subprocess
import sys

import pytest

from dymu_eval.errors import ConfigError
from dymu_eval.lmms.args import parse_model_args, valid_args
from dymu_eval.lmms.names import model_names
from dymu_eval.methods import METHODS
from dymu_eval.methods.settings import method_arg_names
from dymu_eval.report.labels import describe, finalize
from dymu_eval.vocabulary import check_fastv


def test_vocabulary_imports_no_torch():
    code = ("import sys, dymu_eval.vocabulary, dymu_eval.report.labels, dymu_eval.methods;"
            "from dymu_eval.methods import METHODS; [METHODS[m] for m in METHODS]; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_every_reduction_argument_is_documented_and_typed():
    assert set(method_arg_names()) <= set(valid_args())


@pytest.mark.parametrize("model", sorted(model_names()))
def test_parser_and_report_agree_on_each_models_defaults(model):
    method, family = model_names()[model]
    given = {"pretrained": "x", "r": 4} if method == "tome" else {"pretrained": "x"}
    args = parse_model_args(given, model=model)
    spec = METHODS[args.method]
    assert (args.method, args.family) == (method, family)
    for name, arg in spec.args.items():
        if arg.default is not None and name != "level":
            assert getattr(args, name) == arg.parse(name, arg.default)
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

"""docs/adding-a-method.md is true: its example file, run as the page says, gives a working method
(model_args, lmms-eval model names, stats per cut, FLOPs, labels) that no other module names."""
from __future__ import annotations

import re

import pytest
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from dymu_eval.errors import ConfigError
from tests.factories import ROOT, TASKS

PAGE = ROOT / "docs" / "adding-a-method.md"


@pytest.fixture
def drop_tail():
    """The page's one Python block, executed as the method's own file would be on import."""
    from dymu_eval.methods import METHODS

    (code,) = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
    exec(compile(code, str(PAGE), "exec"), {"__name__": "drop_tail"})
    yield METHODS["drop_tail"]
    METHODS.unregister("drop_tail")


def test_the_pages_method_runs_and_is_accounted(drop_tail, tiny_llava):
    from dymu_eval import api
    from dymu_eval.lmms.args import parse_model_args
    from dymu_eval.lmms.names import model_names
    from dymu_eval.report.labels import describe, finalize
    from dymu_eval.vlm import llava

    assert model_names()["drop_tail_llava"] == ("drop_tail", "llava")
    args = parse_model_args({"pretrained": "x", "method": "drop_tail", "keep_fraction": 0.25})
    assert (args.drop_layer, args.keep_fraction) == (1, 0.25)
    with pytest.raises(ConfigError, match="keep_fraction"):
        parse_model_args({"pretrained": "x", "method": "tome", "r": 2, "keep_fraction": 0.25})
    cfg = finalize("dymu_llava", "f", describe("dymu_llava", {"method": "drop_tail", "keep_fraction": "0.25"}))
    assert cfg.label() == "DropTail L1 keep 0.25"

    vlm = api.load(str(tiny_llava), method="drop_tail", keep_fraction=0.25, device_map="cpu")
    img = llava.Image.open(TASKS / "dymu_offline" / "images" / "photo_astronaut.jpg").convert("RGB")
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        _, stats = vlm.generate(["What is shown?"], [[img]], max_new_tokens=3)
    (stage,) = stats[0]["stages"]
    assert stage["layer"] == 1 and stage["entries"] == -(-stats[0]["visual_tokens_before"] // 4)
    assert stats[0]["total_flops"] == pytest.approx(float(counter.get_total_flops()), rel=0.01)


def test_no_module_of_the_package_names_a_method_but_its_own():
    """Methods are registered, not wired in: outside dymu_eval/methods/builtin/<name>.py no library
    module mentions a built-in method's registered name as a string (`make reproduce`'s matrix comes
    from each method's own ``reproduce`` hook, the demo's sections from its ``demo`` hook). Exceptions:
    the commands that label encoder-only runs, the benches and the offline assets, and the project's
    default method (vocabulary.DEFAULT_METHOD)."""
    from dymu_eval.methods import METHODS

    names = [m for m in METHODS if m != "none"]
    offenders = []
    for path in (ROOT / "dymu_eval").rglob("*.py"):
        if path.parent.name in ("builtin", "commands", "bench", "offline"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.startswith("DEFAULT_METHOD ="):
                continue
            offenders += [f"{path.relative_to(ROOT)}:{number}: {m}" for m in names
                          if re.search(rf"[\"']{m}[\"']", line)]
    assert not offenders, offenders

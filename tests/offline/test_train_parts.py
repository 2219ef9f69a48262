"""Pieces of the projector training that need no real weights."""
import random

import pytest
import torch

from dymu_eval.errors import ConfigError
from dymu_eval.offline import micro_llava, train
from dymu_eval.offline.photos import PHOTO_FACTS
from tests.helpers.numerics import SMALL_OPS, assert_rounding_close


def test_scene_questions_are_balanced_with_a_caption():
    cfg = train.TrainConfig(scene_size=224)
    items = train.scene_items(0, 6, cfg)
    rng = random.Random(0)
    for item in items:
        qa = train.questions(item, rng, 8)
        assert 6 <= len(qa) <= 8
        answers = [a for _, a in qa]
        assert answers.count("Yes") == answers.count("No") >= 2
        assert train._caption(item) in answers


def test_photo_questions_follow_the_written_facts():
    cfg = train.TrainConfig(photo_variants=3)
    items = train.photo_items(cfg, random.Random(0))
    assert len(items) == 3 * len(PHOTO_FACTS)
    rng = random.Random(0)
    for item in items[:9]:
        _, present, absent = PHOTO_FACTS[item.photo]
        for q, a in train.questions(item, rng, 8):
            if q.startswith("Is there a "):
                obj = q[len("Is there a "):].split(" in ")[0]
                assert (obj in present and a == "Yes") or (obj in absent and a == "No"), (item.photo, q, a)


def test_lora_folds_into_the_linear_layer():
    """W x + s B A x == (W + s B A) x: exact in mathematics, so checked in float64 at its rounding bound."""
    base = torch.nn.Linear(12, 7)
    lora = train.LoRALinear(base, rank=3, alpha=6.0, generator=torch.Generator().manual_seed(0)).double()
    with torch.no_grad():
        lora.B.normal_()
    x = torch.randn(5, 12, dtype=torch.float64)
    expected = lora(x)
    folded = torch.nn.Linear(12, 7).double()
    folded.load_state_dict(base.state_dict())
    with torch.no_grad():
        folded.weight += (lora.B * lora.scale) @ lora.A
        assert_rounding_close(folded(x), expected, SMALL_OPS)


def test_adapter_files_are_checked(tmp_path):
    bad = tmp_path / "projector.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="projector.safetensors"):
        micro_llava.read_adapters(bad)
    with pytest.raises(ConfigError, match="not found"):
        micro_llava.build_micro_llava(tmp_path / "missing.safetensors")


def test_shipped_projector_is_small_and_complete():
    path = micro_llava.shipped_projector()
    if not path.is_file():
        pytest.skip("no trained projector shipped yet")
    weights = micro_llava.read_adapters(path)
    assert path.stat().st_size < 12_000_000
    for key in ("linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias"):
        assert micro_llava.PROJECTOR_PREFIX + key in weights
    assert weights[micro_llava.PROJECTOR_PREFIX + "linear_1.weight"].shape == (576, 384)
    assert (path.parent / "training.json").is_file()

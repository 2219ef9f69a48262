"""`make micro-train` end to end on tiny settings: it writes weights the model builder accepts,
and a run can continue from them."""
import json

import pytest

from dymu_eval.offline import micro_llava, train

pytestmark = pytest.mark.slow

# the smallest settings that still train (two steps), anchor, score held-out questions and save; the
# real DINOv2 + SmolLM2 make every step and every held-out answer cost seconds on a slow CPU
TINY = ["--train-scenes", "2", "--eval-scenes", "1", "--photo-variants", "1", "--anchor-steps", "3",
        "--eval-every-minutes", "0", "--questions-per-image", "3"]


def test_training_writes_foldable_weights_and_continues(tmp_path, dinov2_224, smol):
    first = tmp_path / "first"
    assert train.main(TINY + ["--steps", "2", "--out", str(first)]) == 0
    weights = micro_llava.read_adapters(first / "projector.safetensors")
    report = json.loads((first / "training.json").read_text())
    assert report["steps_done"] == 2
    assert report["anchor"]["steps"] == 3
    assert set(report["heldout_pope_style"]) == {"accuracy", "n", "yes_ratio"}
    assert report["heldout_pope_style"]["n"] == 2  # one present and one absent shape per held-out scene

    n_layers = 30  # SmolLM2-135M
    targets = train.TrainConfig().lora_targets.split(",")
    adapters = {k.rsplit(".", 1)[0] for k in weights if k.startswith(micro_llava.LORA_PREFIX)}
    assert len(adapters) == n_layers * len(targets)
    model, _ = micro_llava.assemble(adapters=weights)  # folds every adapter; raises on any mismatch
    assert model.model.multi_modal_projector.linear_1.weight.shape == (576, 384)

    second = tmp_path / "second"
    init = ["--steps", "1", "--init", str(first / "projector.safetensors"), "--out", str(second)]
    assert train.main(TINY + init) == 0
    continued = json.loads((second / "training.json").read_text())
    assert continued["anchor"] == {}  # a continued run keeps its projector instead of re-anchoring
    assert continued["steps_total"] == 3  # its own step after the first run's two

"""On the real DINOv2-S weights, DToMe keeps few tokens for a flat image, many for a busy photo."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dymu_eval.errors import AssetUnavailable
from dymu_eval.merge import BatchTopK, Threshold, merges_per_layer
from dymu_eval.vision import VisionRunner
from dymu_eval.vision.preprocess import ImageTransform

CALIBRATION = ["chelsea", "coffee", "rocket", "china", "flower", "grace_hopper"]


@pytest.fixture(scope="module")
def real():
    try:
        from dymu_eval.offline.assets import dinov2_small, sample_photos

        model = dinov2_small(image_size=224)
        photos = sample_photos()
    except AssetUnavailable as exc:
        pytest.skip(f"real DINOv2-S weights or photos not installed: {exc}")
    return model, photos


def test_flat_image_keeps_far_fewer_tokens(real):
    model, photos = real
    runner = VisionRunner.from_model(model, layers_run=model.config.num_hidden_layers - 1)  # read layer -2
    transform = ImageTransform.for_encoder("dinov2", 224)
    r = merges_per_layer(runner.r_for_level("low"), runner.num_layers)
    calib = BatchTopK(r)
    pixels, _ = transform([Image.open(photos[n]) for n in CALIBRATION])
    runner(pixels, calib)
    policy = Threshold(calib.thresholds, r)

    flat = Image.new("RGB", (320, 240), (120, 160, 200))
    ramp = np.linspace(0, 255, 320, dtype=np.float32)
    gradient = Image.fromarray(np.stack([np.tile(ramp, (240, 1))] * 3, axis=-1).astype(np.uint8))
    pixels, _ = transform([flat, gradient, Image.open(photos["astronaut"])])
    out = runner(pixels, policy)
    n_flat, n_gradient, n_photo = out.counts[:, -1].tolist()
    assert n_photo > 4 * n_flat, out.counts[:, -1].tolist()
    assert n_photo > 4 * n_gradient, out.counts[:, -1].tolist()
    assert runner.num_patches(224) + 1 > n_photo  # the photo merged too

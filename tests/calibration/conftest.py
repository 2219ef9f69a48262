"""Tiny random CLIP, SigLIP and DINOv2 towers of ``CALIB_TOWER`` shape saved with their image processors,
and a folder of small random images, for the calibration and cache tests."""
from __future__ import annotations

import pytest

from tests.factories.media import write_images
from tests.factories.towers import CALIB_TOWER, FAMILIES, save_tower


@pytest.fixture(scope="session")
def calib_dirs(tmp_path_factory):
    """family -> save_pretrained folder (weights + image processor)."""
    return {fam: save_tower(tmp_path_factory.mktemp(fam), fam, CALIB_TOWER) for fam in FAMILIES}


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    write_images(folder, 16)
    return folder

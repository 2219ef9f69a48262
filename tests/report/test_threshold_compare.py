"""`dymu-eval thresholds compare` on two cache entries made by the real `dymu-eval calibrate`."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dymu_eval.cli import main as cli_main
from dymu_eval.commands.thresholds_compare import compare
from dymu_eval.errors import ThresholdCacheError
from dymu_eval.thresholds import load_record
from tests.factories.towers import CALIB_TOWER, save_tower


def _images(folder: Path, n: int, busy: float, seed: int) -> Path:
    """Blocky images; ``busy`` is the share of noisy blocks (plain images merge more)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        img = np.repeat(np.repeat(rng.integers(0, 255, (4, 4, 3)), 8, 0), 8, 1).astype(np.float32)
        noise = rng.random((32, 32)) < busy
        img[noise] = rng.integers(0, 255, (int(noise.sum()), 3))
        Image.fromarray(img.astype(np.uint8)).save(folder / f"img_{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def two_entries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tcompare")
    enc = save_tower(root / "tiny_clip", "clip", replace(CALIB_TOWER, heads=2))
    plain = _images(root / "plain", 8, 0.02, 1)
    busy = _images(root / "busy", 8, 0.6, 2)
    cache = root / "cache"
    for ds, folder in (("llava_instruct", busy), ("pixmo_cap", plain)):
        rc = cli_main(["calibrate", "--encoder", str(enc), "--dataset", ds, "--images", str(folder), "--r", "6",
                       "--batch-size", "4", "--stats-images", "0", "--no-progress",
                       "--out", str(cache / f"tiny_clip__{ds}__constant__r6.json")])
        assert rc == 0
    evaluation = _images(root / "eval", 6, 0.3, 3)
    return {"encoder": enc, "cache": cache, "eval": evaluation}


def test_compare_side_by_side_and_tokens(two_entries: dict[str, Path], tmp_path: Path) -> None:
    cache, enc = two_entries["cache"], two_entries["encoder"]
    comp = compare("tiny_clip", ["llava_instruct", "pixmo_cap"], r=6, dirs=[str(cache)],
                   images=str(two_entries["eval"]), encoder=str(enc), out=str(tmp_path / "cmp"), progress=False)
    for ds in ("llava_instruct", "pixmo_cap"):
        rec = load_record(cache / f"tiny_clip__{ds}__constant__r6.json")
        got = comp.thresholds[ds].tolist()
        assert [None if pd.isna(g) else g for g in got] == rec.thresholds
        assert len(comp.tokens[ds]) == 6
        # 8x8 patches (CLS excluded): at most half of the tokens merge in each of the 3 layers
        assert all(64 // 8 <= t <= 64 for t in comp.tokens[ds])
    # thresholds found on busy images are lower at every layer, so they merge more on the same images
    lo, hi = comp.thresholds["llava_instruct"], comp.thresholds["pixmo_cap"]
    assert (lo < hi).all()
    assert np.mean(comp.tokens["llava_instruct"]) < np.mean(comp.tokens["pixmo_cap"])
    files = sorted(p.name for p in (tmp_path / "cmp").iterdir())
    assert files == ["thresholds_compare.png", "thresholds_side_by_side.csv", "tokens_per_image.csv",
                     "tokens_summary.csv"]
    back = pd.read_csv(tmp_path / "cmp" / "tokens_per_image.csv")
    assert back["pixmo_cap"].tolist() == comp.tokens["pixmo_cap"]
    # images named relative to the evaluation folder, so a committed table reads the same anywhere
    assert back["image"].tolist() == sorted(p.relative_to(two_entries["eval"]).as_posix()
                                            for p in two_entries["eval"].rglob("*.png"))


def test_compare_cli_and_missing_entry(two_entries: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    cache = str(two_entries["cache"])
    rc = cli_main(["thresholds", "compare", "--encoder-name", "tiny_clip", "--datasets", "llava_instruct,pixmo_cap",
                   "--r", "6", "--dir", cache])
    assert rc == 0
    out = capsys.readouterr().out
    assert "llava_instruct" in out and "pixmo_cap" in out and len(out.splitlines()) == 1 + 3
    with pytest.raises(ThresholdCacheError, match="dymu-eval calibrate"):
        compare("tiny_clip", ["llava_instruct", "coco"], r=6, dirs=[cache])
    assert cli_main(["thresholds", "compare", "--encoder-name", "tiny_clip", "--datasets", "llava_instruct",
                     "--r", "6", "--dir", cache]) == 2

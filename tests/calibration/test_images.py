"""Every kind of bad or unusual image either converts by the documented rule or raises
InputImageError naming its path; image sources list images deterministically."""
from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from dymu_eval.errors import ConfigError, InputImageError
from dymu_eval.images import FolderImages, HFDatasetImages, ImageListImages, load_image
from dymu_eval.offline.photos import OfflineImages


def _noise(w=48, h=40, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with a tiny (invalid-size) data stream."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def _raises_naming(path, match: str):
    with pytest.raises(InputImageError, match=match) as info:
        load_image(path)
    assert str(path) in str(info.value)


# -- rejected ---------------------------------------------------------------------------------

def test_corrupt_bytes(tmp_path):
    path = tmp_path / "corrupt.png"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    _raises_naming(path, "not an image")


def test_truncated_jpeg(tmp_path):
    full = io.BytesIO()
    Image.fromarray(_noise(96, 96)).save(full, format="JPEG", quality=90)
    path = tmp_path / "truncated.jpg"
    path.write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    _raises_naming(path, "truncated")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    _raises_naming(path, "empty file")


def test_missing_file_and_folder(tmp_path):
    _raises_naming(tmp_path / "nope.png", "not found")
    _raises_naming(tmp_path, "not a regular file")


@pytest.mark.parametrize("size", [(1, 1), (200, 3)])
def test_too_small(tmp_path, size):
    path = tmp_path / "tiny.png"
    Image.new("RGB", size, (10, 20, 30)).save(path)
    _raises_naming(path, "too small")


def test_decompression_bomb_rejected_from_header(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(60_000, 60_000))  # 3.6 gigapixels claimed, 100 bytes on disk
    _raises_naming(path, "exceeds the limit")


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    path = tmp_path / "photo.png"
    Image.fromarray(_noise(48, 40)).save(path)
    with pytest.raises(InputImageError, match="exceeds the limit of 1000"):
        load_image(path, max_pixels=1000)
    monkeypatch.setenv("DYMU_EVAL_MAX_IMAGE_PIXELS", "1000")
    _raises_naming(path, "exceeds")
    monkeypatch.setenv("DYMU_EVAL_MAX_IMAGE_PIXELS", "5000")
    assert load_image(path).size == (48, 40)


def test_pillow_global_switches_restored(tmp_path):
    from PIL import ImageFile

    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(60_000, 60_000))
    with pytest.raises(InputImageError):
        load_image(path)
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before


# -- converted --------------------------------------------------------------------------------

def test_rgb_unchanged(tmp_path):
    arr = _noise()
    path = tmp_path / "rgb.png"
    Image.fromarray(arr).save(path)
    out = load_image(path)
    assert out.mode == "RGB" and np.array_equal(np.asarray(out), arr)


def test_grayscale_and_bilevel(tmp_path):
    grey = _noise()[..., 0]
    path = tmp_path / "grey.png"
    Image.fromarray(grey).save(path)
    out = np.asarray(load_image(path))
    assert out.shape == grey.shape + (3,)
    assert all(np.array_equal(out[..., c], grey) for c in range(3))
    bilevel = tmp_path / "bw.png"
    Image.fromarray(grey > 127).convert("1").save(bilevel)
    assert set(np.unique(np.asarray(load_image(bilevel)))) <= {0, 255}


def test_rgba_composited_on_white(tmp_path):
    arr = np.zeros((20, 30, 4), dtype=np.uint8)
    arr[..., :3] = (200, 10, 50)
    arr[:, :10, 3] = 0  # transparent (its colour is meaningless)
    arr[:, 10:20, 3] = 255  # opaque
    arr[:, 20:, 3] = 128  # half
    path = tmp_path / "rgba.png"
    Image.fromarray(arr, "RGBA").save(path)
    out = np.asarray(load_image(path)).astype(int)
    assert (out[:, :10] == 255).all()
    assert (out[:, 10:20] == (200, 10, 50)).all()
    expected = np.rint(np.array([200, 10, 50]) * 128 / 255 + 255 * (1 - 128 / 255))
    assert np.abs(out[:, 20:] - expected).max() <= 1


def test_grey_alpha_and_palette_transparency(tmp_path):
    la = np.zeros((16, 16, 2), dtype=np.uint8)
    la[..., 0] = 40
    la[:8, :, 1] = 255
    path = tmp_path / "la.png"
    Image.fromarray(la, "LA").save(path)
    out = np.asarray(load_image(path))
    assert (out[:8] == 40).all() and (out[8:] == 255).all()

    pal = Image.new("P", (16, 16), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.paste(1, (0, 0, 16, 8))
    pal.info["transparency"] = 0
    ppath = tmp_path / "pal.png"
    pal.save(ppath, transparency=0)
    out = np.asarray(load_image(ppath))
    assert (out[:8] == (255, 0, 0)).all() and (out[8:] == 255).all()


def test_cmyk(tmp_path):
    arr = _noise()
    path = tmp_path / "cmyk.tif"
    Image.fromarray(arr).convert("CMYK").save(path)
    assert Image.open(path).mode == "CMYK"
    out = load_image(path)
    assert out.mode == "RGB" and np.array_equal(np.asarray(out), arr)


def test_cmyk_jpeg(tmp_path):
    arr = _noise()
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(arr).convert("CMYK").save(path, quality=100)
    out = np.asarray(load_image(path)).astype(int)
    assert np.abs(out - arr).mean() < 12  # JPEG is lossy, but colours must not be inverted


def test_sixteen_bit_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 257 * 100, 65535] * 4] * 16, dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    out = np.asarray(load_image(path))
    assert out.dtype == np.uint8
    assert np.array_equal(out[..., 0], np.rint(values / 257).astype(np.uint8))
    assert out[0, 3].tolist() == [255, 255, 255] and out[0, 2].tolist() == [100, 100, 100]


def test_float_image(tmp_path):
    values = np.linspace(0, 1, 16 * 16, dtype=np.float32).reshape(16, 16)
    image = Image.fromarray(values)
    assert image.mode == "F"
    out = np.asarray(load_image(image))
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255


def test_exif_orientation_applied(tmp_path):
    img = Image.fromarray(_noise(40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif.tobytes())
    assert load_image(path).size == (20, 40)


def test_bytes_and_pil_inputs():
    buf = io.BytesIO()
    Image.fromarray(_noise()).save(buf, format="PNG")
    assert load_image(buf.getvalue(), name="sample-3").size == (48, 40)
    with pytest.raises(InputImageError, match="sample-4"):
        load_image(b"not an image at all", name="sample-4")
    with pytest.raises(InputImageError, match="sample-5: empty"):
        load_image(b"", name="sample-5")
    assert load_image(Image.new("L", (16, 16), 7)).getpixel((0, 0)) == (7, 7, 7)


# -- sources ----------------------------------------------------------------------------------

def _save(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_noise(seed=seed)).save(path)


def test_folder_recursive_sorted(tmp_path):
    for rel in ["b.png", "a/z.jpg", "a/b/c.PNG", "c.png"]:
        _save(tmp_path / rel)
    (tmp_path / "notes.txt").write_text("x")
    src = FolderImages(tmp_path, name="mine")
    assert src.keys == ["a/b/c.PNG", "a/z.jpg", "b.png", "c.png"]
    assert any("1 non-image" in n for n in src.notes)
    assert src.load(0).size == (48, 40)
    assert src.identity()["num_images"] == 4 and src.identity()["name"] == "mine"
    assert src.head(2).keys == src.keys[:2] and src.head(2).fingerprint() != src.fingerprint()
    assert FolderImages(tmp_path).fingerprint() == src.fingerprint()


def test_folder_errors(tmp_path):
    with pytest.raises(ConfigError, match="not a folder"):
        FolderImages(tmp_path / "missing")
    with pytest.raises(ConfigError, match="no image files"):
        FolderImages(tmp_path)


def test_image_list_skips_entries_without_image(tmp_path):
    root = tmp_path / "root"
    _save(root / "coco/1.jpg")
    _save(root / "vg/2.png", seed=1)
    entries = [{"image": "coco/1.jpg", "id": 1}, {"id": "text-only"}, {"image": "vg/2.png"}, {"id": 4}]
    listing = tmp_path / "mix.json"
    listing.write_text(json.dumps(entries))
    src = ImageListImages(listing, root, name="llava_instruct")
    assert src.keys == ["coco/1.jpg", "vg/2.png"]
    assert src.notes == ["2 of 4 entries have no 'image' field and were skipped"]
    assert src.label(1) == str(root / "vg/2.png")
    (root / "coco/1.jpg").unlink()
    with pytest.raises(InputImageError, match="coco/1.jpg: file not found"):
        src.load(0)


def test_image_list_bad_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    with pytest.raises(ConfigError, match="bad.json: not valid JSON"):
        ImageListImages(bad, tmp_path)
    bad.write_text(json.dumps([{"image": ["a.jpg", "b.jpg"]}]))
    with pytest.raises(ConfigError, match="entry 0"):
        ImageListImages(bad, tmp_path)


def test_hf_dataset_paths_and_image_feature(tmp_path):
    for i in range(3):
        _save(tmp_path / "imgs" / f"{i}.png", seed=i)
    table = tmp_path / "data.jsonl"
    table.write_text("".join(json.dumps({"picture": f"imgs/{i}.png", "caption": "x"}) + "\n" for i in range(3)))
    cache = tmp_path / "hf-cache"
    src = HFDatasetImages(str(table), "picture", cache_dir=cache)
    assert len(src) == 3 and np.array_equal(np.asarray(src.load(2)), _noise(seed=2))
    with pytest.raises(ConfigError, match="no column 'image'"):
        HFDatasetImages(str(table), "image", cache_dir=cache)

    folder = tmp_path / "imagefolder"
    for i in range(2):
        _save(folder / "train" / f"{i}.png", seed=10 + i)
    src = HFDatasetImages(str(folder), "image", cache_dir=cache)
    loaded = sorted(np.asarray(src.load(i)).sum() for i in range(2))
    assert loaded == sorted(_noise(seed=10 + i).sum() for i in range(2))


def test_offline_photos_sorted():
    from dymu_eval.errors import AssetUnavailable

    try:
        src = OfflineImages()
    except AssetUnavailable as exc:
        pytest.skip(str(exc))
    assert src.keys == sorted(src.keys) and len(src) > 3
    assert src.load(0).mode == "RGB"

"""Robust image loading: any file a user points at becomes an RGB PIL image or a clear error.

Calibration averages statistics over thousands of images, so a silently mis-decoded image
(a black RGBA background, a 16-bit scan clipped to white, a truncated JPEG padded with grey)
would shift the thresholds without anyone noticing. Every image therefore either converts
by a documented rule or raises :class:`InputImageError` naming its path and the reason.

Conversion rules:

* EXIF orientation is applied first (phones store portrait photos rotated).
* Transparency (RGBA, LA, PA, palette with a transparent index) is composited on **white**:
  the colour of fully transparent pixels is undefined in most files (often black), and
  white is what viewers and document renderers show.
* 16-bit greyscale (``I;16*``) is scaled to 8 bit by ``round(v / 257)`` (65535 -> 255);
  32-bit integer (``I``) the same after clipping to 0..65535; float (``F``) images whose
  values lie in [0, 1] are scaled by 255, others clipped to 0..255.
* Greyscale, bilevel, palette, CMYK, YCbCr, LAB and HSV use Pillow's own conversion to RGB.

Rejected: missing or empty files, data Pillow cannot identify, truncated or corrupt data,
images whose shorter side is below ``MIN_SIDE`` pixels, and images with more than
``max_pixels`` pixels (a decompression-bomb guard, checked from the header before decoding;
``DYMU_EVAL_MAX_IMAGE_PIXELS`` or the ``max_pixels`` argument changes it).
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import ConfigError, InputImageError

# A side shorter than this cannot be a real photo (1x1 tracking pixels, broken thumbnails);
# it would be upsampled to hundreds of identical patches and merge completely.
MIN_SIDE = 8
# Pillow's own warning limit (about 89 megapixels, e.g. 9459 x 9459).
DEFAULT_MAX_PIXELS = 89_478_485
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

_PIL_GLOBALS = threading.Lock()  # Pillow's bomb and truncation switches are process-wide

ImageInput = Union[str, os.PathLike, bytes, Image.Image]


def max_pixels_default() -> int:
    """The decompression-bomb limit: ``DYMU_EVAL_MAX_IMAGE_PIXELS`` or Pillow's warning limit."""
    raw = os.environ.get("DYMU_EVAL_MAX_IMAGE_PIXELS")
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"DYMU_EVAL_MAX_IMAGE_PIXELS={raw!r} is not an integer") from exc
    if value <= 0:
        raise ConfigError(f"DYMU_EVAL_MAX_IMAGE_PIXELS={raw!r} must be positive")
    return value


def load_image(
    source: ImageInput,
    name: str | None = None,
    *,
    max_pixels: int | None = None,
    min_side: int = MIN_SIDE,
) -> Image.Image:
    """Decode ``source`` (a path, encoded bytes or a PIL image) into an 8-bit RGB PIL image.

    ``name`` labels the image in errors (defaults to the path); raises InputImageError.
    """
    label = name or (str(source) if isinstance(source, (str, os.PathLike)) else "<in-memory image>")
    limit = max_pixels_default() if max_pixels is None else max_pixels
    if isinstance(source, Image.Image):
        image = source
        _check_size(image, label, limit, min_side)
        try:
            image.load()
        except Exception as exc:  # Pillow raises many types for bad data
            raise InputImageError(f"{label}: cannot decode image data ({exc})") from exc
        return _to_rgb(image, label)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise InputImageError(f"{label}: empty image data (0 bytes)")
        return _decode(io.BytesIO(data), label, limit, min_side)
    path = Path(source)
    if not path.exists():
        raise InputImageError(f"{label}: file not found")
    if not path.is_file():
        raise InputImageError(f"{label}: not a regular file")
    if path.stat().st_size == 0:
        raise InputImageError(f"{label}: empty file (0 bytes)")
    with open(path, "rb") as handle:
        return _decode(handle, label, limit, min_side)


def _decode(handle, label: str, limit: int, min_side: int) -> Image.Image:
    # Pillow's own bomb check (which raises at 2x its limit) is replaced by ours so the limit
    # is configurable; truncated data must fail rather than be padded with grey.
    with _PIL_GLOBALS:
        saved_limit, saved_truncated = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = None, False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                try:
                    image = Image.open(handle)
                except UnidentifiedImageError as exc:
                    raise InputImageError(
                        f"{label}: not an image Pillow can identify (corrupt or unknown format)") from exc
                except Exception as exc:
                    raise InputImageError(f"{label}: cannot open image ({exc})") from exc
                _check_size(image, label, limit, min_side)
                try:
                    image.load()
                except Exception as exc:
                    raise InputImageError(f"{label}: corrupt or truncated image data ({exc})") from exc
        finally:
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved_limit, saved_truncated
    return _to_rgb(image, label)


def _check_size(image: Image.Image, label: str, limit: int, min_side: int) -> None:
    width, height = image.size
    if width * height > limit:
        raise InputImageError(
            f"{label}: {width}x{height} = {width * height} pixels exceeds the limit of {limit} "
            "(decompression-bomb guard; raise it with DYMU_EVAL_MAX_IMAGE_PIXELS if the image is genuine)"
        )
    if min(width, height) < min_side:
        raise InputImageError(f"{label}: {width}x{height} is too small (each side must be at least {min_side} px)")


def _to_rgb(image: Image.Image, label: str) -> Image.Image:
    try:
        image = ImageOps.exif_transpose(image)
    except Exception as exc:  # a broken EXIF block is a corrupt file
        raise InputImageError(f"{label}: cannot apply EXIF orientation ({exc})") from exc
    try:
        return _convert(image)
    except InputImageError:
        raise
    except Exception as exc:
        raise InputImageError(f"{label}: cannot convert mode {image.mode} to RGB ({exc})") from exc


def _convert(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image, dtype=np.float64)
        return _grey_to_rgb(np.clip(values, 0, 65535) / 257.0)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        finite = values[np.isfinite(values)]
        if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0:
            values = values * 255.0
        return _grey_to_rgb(np.clip(np.nan_to_num(values), 0, 255))
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "LAB":
        from PIL import ImageCms

        return ImageCms.applyTransform(
            image, ImageCms.buildTransformFromOpenProfiles(
                ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
            )
        )
    return image.convert("RGB")


def _grey_to_rgb(values: np.ndarray) -> Image.Image:
    grey = Image.fromarray(np.rint(values).astype(np.uint8))  # 2-D uint8 -> mode L
    return grey.convert("RGB")


def is_image_file(path: Path) -> bool:
    """Whether a folder walk should treat ``path`` as an image (by extension, case-insensitive)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


# -- image sources: a deterministic, fingerprinted list of images ------------------------------


class ImageSource:
    """An ordered list of images with stable keys; subclasses say where the pixels come from.

    ``keys`` fixes the order every process agrees on (it is what calibration shards by rank
    and what the dataset fingerprint hashes); ``load(i)`` decodes image ``i`` or raises
    InputImageError naming it. ``notes`` collects what was left out while listing (e.g. JSON
    entries without an image) so the CLI can report it.
    """

    kind = "images"

    def __init__(self, name: str, location: str, keys: list[str], notes: list[str] | None = None):
        self.name = name
        self.location = location
        self.keys = list(keys)
        self.notes = list(notes or [])

    def __len__(self) -> int:
        return len(self.keys)

    def load(self, index: int) -> Image.Image:  # pragma: no cover - interface
        raise NotImplementedError

    def label(self, index: int) -> str:
        """How image ``index`` is named in reports (a path where there is one)."""
        return self.keys[index]

    def head(self, count: int | None) -> "ImageSource":
        """The first ``count`` images (all when None, or when there are fewer: a note says so), same
        loader and identity."""
        if count is None or count == len(self.keys):
            return self
        if count <= 0:
            raise ConfigError(f"num_images must be positive, got {count}")
        clone = copy.copy(self)
        clone.keys = self.keys[:count]
        used = (f"first {count} of {len(self.keys)} images used" if count < len(self.keys)
                else f"{count} images asked for, but {self.location} has {len(self.keys)}: all {len(self.keys)} used")
        clone.notes = self.notes + [used]
        return clone

    def fingerprint(self) -> str:
        """sha256 over the ordered image keys: two calibrations saw the same list iff equal."""
        digest = hashlib.sha256()
        digest.update(self.kind.encode())
        for key in self.keys:
            digest.update(b"\0" + key.encode("utf-8"))
        return "sha256:" + digest.hexdigest()

    def identity(self) -> dict[str, Any]:
        """The dataset block of a threshold record."""
        return {
            "name": self.name,
            "kind": self.kind,
            "source": self.location,
            "num_images": len(self.keys),
            "fingerprint": self.fingerprint(),
        }


class FolderImages(ImageSource):
    """Every image file under a folder, recursively, sorted by relative POSIX path."""

    kind = "folder"

    def __init__(self, root: str | os.PathLike, name: str | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigError(f"image folder {self.root}: not a folder")
        files = sorted(
            (p for p in self.root.rglob("*") if p.is_file() and is_image_file(p)),
            key=lambda p: p.relative_to(self.root).as_posix(),
        )
        others = sum(1 for p in self.root.rglob("*") if p.is_file() and not is_image_file(p))
        notes = ([f"{others} non-image files ignored (extensions other than {', '.join(IMAGE_EXTENSIONS)})"]
                 if others else [])
        if not files:
            raise ConfigError(f"image folder {self.root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found")
        keys = [p.relative_to(self.root).as_posix() for p in files]
        super().__init__(name or self.root.name, str(self.root), keys, notes)

    def label(self, index: int) -> str:
        return str(self.root / self.keys[index])

    def load(self, index: int) -> Image.Image:
        return load_image(self.root / self.keys[index])


class ImageListImages(ImageSource):
    """A LLaVA-Instruct style JSON list of ``{"image": relpath, ...}`` under an image root.

    Entries without an ``image`` field (text-only conversations) are skipped and counted.
    The list order is kept (it is already deterministic) and repeated images are kept, as
    the reference implementation does.
    """

    kind = "image_list"

    def __init__(self, list_path: str | os.PathLike, image_root: str | os.PathLike, name: str | None = None):
        self.list_path = Path(list_path)
        self.root = Path(image_root)
        if not self.list_path.is_file():
            raise ConfigError(f"image list {self.list_path}: file not found")
        if not self.root.is_dir():
            raise ConfigError(f"image_root {self.root}: not a folder")
        try:
            entries = json.loads(self.list_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"image list {self.list_path}: not valid JSON ({exc})") from exc
        if not isinstance(entries, list):
            raise ConfigError(f"image list {self.list_path}: expected a JSON list of objects, "
                              f"got {type(entries).__name__}")
        keys, skipped = [], 0
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ConfigError(f"image list {self.list_path}: entry {i} is {type(entry).__name__}, "
                                  "expected an object")
            image = entry.get("image")
            if image is None:
                skipped += 1
                continue
            if not isinstance(image, str) or not image:
                raise ConfigError(
                    f"image list {self.list_path}: entry {i} has image={image!r}; expected one relative path string"
                )
            keys.append(image)
        if not keys:
            raise ConfigError(f"image list {self.list_path}: no entry has an 'image' field")
        notes = [f"{skipped} of {len(entries)} entries have no 'image' field and were skipped"] if skipped else []
        super().__init__(name or self.list_path.stem, f"{self.list_path} (root {self.root})", keys, notes)

    def label(self, index: int) -> str:
        return str(self.root / self.keys[index])

    def load(self, index: int) -> Image.Image:
        return load_image(self.root / self.keys[index])


class HFDatasetImages(ImageSource):
    """An image column of a Hugging Face dataset (hub id, local folder, or a json/jsonl/
    parquet/csv file). Cells may be PIL images, encoded bytes, ``{"bytes", "path"}`` dicts or
    paths (relative paths resolve against ``image_root`` or the dataset file's folder)."""

    kind = "hf_dataset"

    def __init__(
        self,
        dataset: str,
        image_column: str,
        split: str = "train",
        name: str | None = None,
        image_root: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
    ):
        try:
            import datasets
        except ImportError as exc:  # pragma: no cover - datasets is a dependency
            raise ConfigError("a Hugging Face dataset source needs the 'datasets' package: "
                              "pip install datasets") from exc
        local = Path(dataset)
        builders = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
        try:
            if local.is_file() and local.suffix.lower() in builders:
                ds = datasets.load_dataset(
                    builders[local.suffix.lower()], data_files=str(local), split=split, cache_dir=cache_dir
                )
                base = local.parent
            else:
                ds = datasets.load_dataset(str(dataset), split=split, cache_dir=cache_dir)
                base = local if local.is_dir() else None
        except Exception as exc:  # datasets raises many types
            raise ConfigError(f"dataset {dataset} (split {split}): cannot load ({exc})") from exc
        if image_column not in ds.column_names:
            raise ConfigError(
                f"dataset {dataset}: no column {image_column!r}; columns are {', '.join(ds.column_names)}"
            )
        if isinstance(ds.features[image_column], datasets.Image):
            ds = ds.cast_column(image_column, datasets.Image(decode=False))  # decode through load_image
        self.ds = ds
        self.column = image_column
        self.base = Path(image_root) if image_root is not None else base
        self.dataset_id = str(dataset)
        self.split = split
        keys = [f"{dataset}[{split}][{i}]" for i in range(len(ds))]
        super().__init__(name or local.stem or str(dataset), f"{dataset} [{split}] column {image_column}", keys)
        self._ds_fingerprint = getattr(ds, "_fingerprint", "")

    def fingerprint(self) -> str:
        digest = hashlib.sha256(super().fingerprint().encode())
        digest.update(str(self._ds_fingerprint).encode())
        return "sha256:" + digest.hexdigest()

    def load(self, index: int) -> Image.Image:
        label = self.keys[index]
        cell = self.ds[index][self.column]
        if isinstance(cell, dict):
            if cell.get("bytes"):
                return load_image(cell["bytes"], name=f"{label} ({cell.get('path') or 'bytes'})")
            cell = cell.get("path")
        if isinstance(cell, (bytes, bytearray, Image.Image)):
            return load_image(cell, name=label)
        if isinstance(cell, str) and cell:
            path = Path(cell)
            if not path.is_absolute() and self.base is not None:
                path = self.base / path
            return load_image(path, name=f"{label} ({path})")
        raise InputImageError(f"{label}: column {self.column!r} holds {type(cell).__name__}, "
                              "not an image, bytes or path")

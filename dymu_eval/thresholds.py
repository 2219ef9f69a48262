"""The threshold cache: one JSON file per (encoder, calibration dataset, schedule, level|r).

DToMe's per-layer thresholds are only meaningful for the weights and the kind of images they
were found on, so a record carries both identities and loading checks them (see ``ThresholdRecord.validate_for``).

Record layout (``format_version`` 1)::

    format, format_version, key
    encoder:     name, aliases, fingerprint (None = unknown), fingerprint_note, family,
                 num_layers, layers_run, read_layer, has_cls, hidden_size, patch_size, image_size
    dataset:     name, kind, source, num_images, fingerprint
    calibration: batch_size, processes, dtype, seed, level, r, r_total, r_per_layer, schedule,
                 merge_order, batches, images_used, images_dropped, skipped
    thresholds:  one entry per encoder layer (``num_layers`` of them); ``null`` for a layer that
                 never merges (not run by the VLM, or r = 0 in the schedule)
    token_stats, provenance, tool_version, created

``calibration.merge_order`` is the token order the thresholds were found under (``reference``
or ``position``, see ``merge.order``); thresholds only give the token counts they were tuned
for under that order, so a DToMe policy always runs with it and lookups are keyed by it
(position-order files get a ``__position`` suffix). A file without the field is read as
``position`` when dymu-eval calibrated it (its versions before the field always merged in
position order) and as ``reference`` otherwise (imported or published values, found by the
official code).

Lookup order: an explicit path, then the repository's ``thresholds/`` folder, then the user
cache (``<user cache>/thresholds``). Writes are atomic (temporary file + ``os.replace``) and
refuse to replace an existing file unless asked.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .errors import ConfigError, ThresholdCacheError
from .vocabulary import DEFAULT_MERGE_ORDER, DEFAULT_SCHEDULE

_log = logging.getLogger(__name__)

FORMAT = "dymu-eval-thresholds"
FORMAT_VERSION = 1

# Fingerprints compare the structure exactly and sampled weight values loosely, so the same
# weights loaded in fp32, fp16 or bf16 match (bf16 rounds by up to 2**-9 relative).
_FP_PREFIX = "ws1"
_FP_RTOL = 1e-2
_FP_ATOL = 1e-5
_FP_TENSORS = 8

# Provenance of the files dymu-eval's own calibration writes, and the order its versions before
# ``calibration.merge_order`` existed merged in (see ThresholdRecord.merge_order).
CALIBRATED_PROVENANCE = "calibrated with dymu-eval"
LEGACY_CALIBRATED_ORDER = "position"

# How the miss message says to get images for the datasets users calibrate on.
_DATASET_HINTS = {
    "llava_instruct": ["--image-list", "llava_v1_5_mix665k.json", "--image-root", "<LLaVA-1.5 image root>"],
    "pixmo_cap": ["--images", "<folder of downloaded Pixmo-Cap images>"],
    "offline_photos": ["--offline-photos"],
}


# -- identities -------------------------------------------------------------------------------


@dataclass
class EncoderIdentity:
    """Which vision weights the thresholds belong to and which layers were run."""

    name: str
    num_layers: int
    layers_run: int
    fingerprint: str | None = None
    fingerprint_note: str | None = None
    aliases: list[str] = field(default_factory=list)
    family: str | None = None
    read_layer: int | None = None
    has_cls: bool | None = None
    hidden_size: int | None = None
    patch_size: int | None = None
    image_size: int | None = None


@dataclass
class ThresholdRecord:
    """One calibrated (or published) set of per-layer thresholds with its provenance."""

    encoder: EncoderIdentity
    dataset: dict[str, Any]
    calibration: dict[str, Any]
    thresholds: list[float | None]
    token_stats: dict[str, Any] | None = None
    provenance: str | None = None
    tool_version: str = __version__
    created: str | None = None
    source_path: Path | None = None  # where it was loaded from (not serialised)

    # -- derived values -----------------------------------------------------------------------
    @property
    def level(self) -> str | None:
        return self.calibration.get("level")

    @property
    def schedule(self) -> str:
        return self.calibration.get("schedule", DEFAULT_SCHEDULE)

    @property
    def r_per_layer(self) -> list[int]:
        return list(self.calibration["r_per_layer"])

    @property
    def merge_order(self) -> str:
        """The token order these thresholds were found under (see the module docstring)."""
        order = self.calibration.get("merge_order")
        if order is not None:
            return order
        ours = str(self.provenance or "").startswith(CALIBRATED_PROVENANCE)
        return LEGACY_CALIBRATED_ORDER if ours else DEFAULT_MERGE_ORDER

    @property
    def key(self) -> str:
        return record_key(self.encoder.name, self.dataset["name"], self.schedule, self.level, self.calibration.get("r"),
                          self.merge_order)

    def _calibrate_hint(self, merge_order: str | None = None) -> str:
        """The `dymu-eval calibrate` command that makes these thresholds again (in ``merge_order``)."""
        return _hint(calibrate_command(self.encoder.name, self.dataset["name"], self.level, self.calibration.get("r"),
                                       self.schedule, merge_order or self.merge_order))

    def check_order(self, merge_order: str) -> None:
        """ThresholdCacheError unless these thresholds were found under ``merge_order``."""
        if merge_order != self.merge_order:
            where = self.source_path or self.key
            raise ThresholdCacheError(
                f"thresholds {where} were calibrated with merge_order={self.merge_order} but merge_order={merge_order} "
                "was asked; thresholds only give their token counts under the order they were found with. Use "
                f"merge_order={self.merge_order}, or calibrate for {merge_order} order with "
                f"`{self._calibrate_hint(merge_order)} --overwrite`"
            )

    def policy(self, layers_run: int | None = None, call: str = "per_image", merge_order: str | None = None):
        """A DToMe policy (merge.Threshold) for these thresholds, gated by the schedule's r, merging
        in the order they were calibrated under. ``call`` is the family's encoder calling pattern
        (merge.Threshold); ``merge_order``, when given, must be that order (ThresholdCacheError)."""
        from .merge import Threshold

        if merge_order is not None:
            self.check_order(merge_order)
        n = self.encoder.num_layers if layers_run is None else layers_run
        values, gate = dtome_settings(self.thresholds[:n], self.r_per_layer[:n])
        return Threshold(values, gate, merge_order=self.merge_order, call=call)

    # -- serialisation ------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "key": self.key,
            "encoder": asdict(self.encoder),
            "dataset": dict(self.dataset),
            "calibration": dict(self.calibration),
            "thresholds": list(self.thresholds),
            "token_stats": self.token_stats,
            "provenance": self.provenance,
            "tool_version": self.tool_version,
            "created": self.created,
        }

    def dumps(self) -> str:
        """The file's exact text (stable key order, so equal records give equal bytes)."""
        return json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n"

    # -- validation against a model -----------------------------------------------------------
    def validate_for(self, model, *, ignore_fingerprint: bool = False) -> None:
        """Check these thresholds fit ``model`` (a vision model or a LLaVA): layer count,
        architecture, and the weight fingerprint. Raises ThresholdCacheError saying what to do."""
        from .vision.towers import resolve_tower

        tower = resolve_tower(model)
        adapter = tower.adapter
        where = self.source_path or self.key
        enc = self.encoder
        if adapter.num_layers != enc.num_layers:
            raise ThresholdCacheError(
                f"thresholds {where} are for an encoder with {enc.num_layers} layers ({enc.name}) but this vision "
                f"model has {adapter.num_layers}; use thresholds calibrated for this encoder: "
                f"{self._calibrate_hint()}"
            )
        actual = {"hidden_size": adapter.config.hidden_size, "patch_size": adapter.patch_size,
                  "image_size": adapter.image_size}
        for name, value in actual.items():
            expected = getattr(enc, name)
            if expected is not None and int(expected) != int(value):
                raise ThresholdCacheError(
                    f"thresholds {where} are for {enc.name} with {name}={expected} but this vision model has "
                    f"{name}={value}; calibrate thresholds for this encoder with `dymu-eval calibrate`"
                )
        if enc.fingerprint is None:
            return
        now = encoder_fingerprint(adapter.model)
        if fingerprints_match(enc.fingerprint, now):
            return
        if ignore_fingerprint:
            _log.warning("thresholds %s were calibrated on other weights than this vision model (file: %s); "
                         "used anyway because the fingerprint check is off (ignore_fingerprint)", where, enc.name)
            return
        raise ThresholdCacheError(
            f"thresholds {where} were calibrated on other weights than this vision model "
            f"(file: {enc.name}, fingerprint {enc.fingerprint[:24]}...; model: {now[:24]}...). Calibrate for "
            f"these weights with `{self._calibrate_hint()}`"
            ", or, if the weights are known to be equivalent, turn the check off: --ignore-fingerprint "
            "(dymu-eval tokens, thresholds compare) or the model_arg ignore_fingerprint=true (lmms-eval)"
        )


def dtome_settings(thresholds: Sequence[float | None], r_per_layer: Sequence[int]) -> tuple[list[float], list[int]]:
    """(thresholds, gate) for merge.Threshold: a null layer never merges (cosine <= 1 < 2.0)."""
    values = [t if t is not None else 2.0 for t in thresholds]
    gate = [r if t is not None else 0 for r, t in zip(r_per_layer, thresholds)]
    return values, gate


# -- keys and names ---------------------------------------------------------------------------


def slug(text: str) -> str:
    """File-name-safe lower-case form of a model or dataset name (last path component)."""
    last = str(text).rstrip("/\\").replace("\\", "/").split("/")[-1]
    return re.sub(r"[^a-z0-9._-]+", "-", last.lower()).strip("-") or "unnamed"


def record_key(encoder: str, dataset: str, schedule: str, level: str | None, r: int | None,
               merge_order: str = DEFAULT_MERGE_ORDER) -> str:
    """``<encoder>__<dataset>__<schedule>__<level|rN>`` (plus ``__position`` for position-order
    thresholds): the file stem of a cache entry."""
    if level is None and r is None:
        raise ConfigError("a threshold record needs a level (low/mid/high) or r")
    amount = level if level is not None else f"r{int(r)}"
    suffix = "" if merge_order == DEFAULT_MERGE_ORDER else f"__{merge_order}"
    return f"{slug(encoder)}__{slug(dataset)}__{schedule}__{amount}{suffix}"


def calibrate_command(encoder: str, dataset: str, level: str | None, r: int | None, schedule: str = DEFAULT_SCHEDULE,
                      merge_order: str = DEFAULT_MERGE_ORDER, images: list[str] | None = None) -> list[str]:
    """The `dymu-eval calibrate` command (argv) that would produce this cache entry. ``images`` are
    the image-source options; by default a placeholder naming what the dataset needs."""
    if images is None:
        images = _DATASET_HINTS.get(slug(dataset), ["--images", "<folder of calibration images>"])
    amount = ["--level", level] if level is not None else ["--r", str(r)]
    order = [] if merge_order == DEFAULT_MERGE_ORDER else ["--merge-order", merge_order]
    return ["dymu-eval", "calibrate", "--encoder", encoder, "--dataset", dataset, *images, *amount,
            "--schedule", schedule, "--batch-size", "64", *order]


def _hint(command: list[str]) -> str:
    """A command for a message (placeholders such as ``<folder>`` stay readable, unquoted)."""
    return " ".join(command)


# -- fingerprints -----------------------------------------------------------------------------


def encoder_fingerprint(vision_model) -> str:
    """A fast identity of vision weights: ``ws1:<sha256 of names+shapes>:<sampled values>``.

    Names (with a leading ``vision_model.`` stripped) and shapes of every tensor are hashed;
    values are sampled from up to 8 weight matrices evenly spread over the sorted names (the
    first, middle and last element of each), so the same weights in another dtype match
    under :func:`fingerprints_match` while other weights (even of the same architecture) do not.
    """
    import hashlib

    import torch

    state = vision_model.state_dict()
    names = sorted(state)
    digest = hashlib.sha256()
    for name in names:
        canonical = name[len("vision_model."):] if name.startswith("vision_model.") else name
        digest.update(f"{canonical}:{tuple(state[name].shape)}\n".encode())
    matrices = [n for n in names if state[n].dim() >= 2 and state[n].numel() >= 3]
    if len(matrices) > _FP_TENSORS:
        step = (len(matrices) - 1) / (_FP_TENSORS - 1)
        matrices = [matrices[round(i * step)] for i in range(_FP_TENSORS)]
    values: list[float] = []
    with torch.no_grad():
        for name in matrices:
            flat = state[name].reshape(-1)
            for index in (0, flat.numel() // 2, flat.numel() - 1):
                values.append(float(flat[index].float()))
    return f"{_FP_PREFIX}:{digest.hexdigest()[:32]}:" + ",".join(f"{v:.6e}" for v in values)


def fingerprints_match(stored: str, actual: str) -> bool:
    """Same structure hash, and sampled values equal within bf16 rounding."""
    try:
        p1, s1, v1 = stored.split(":", 2)
        p2, s2, v2 = actual.split(":", 2)
        a = [float(x) for x in v1.split(",") if x]
        b = [float(x) for x in v2.split(",") if x]
    except ValueError:
        return stored == actual
    if p1 != p2 or s1 != s2 or len(a) != len(b):
        return False
    return all(abs(x - y) <= _FP_ATOL + _FP_RTOL * abs(y) for x, y in zip(a, b))


# -- reading and writing ----------------------------------------------------------------------


def created_now() -> str:
    """UTC timestamp for ``created``; ``SOURCE_DATE_EPOCH`` pins it (reproducible files)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = datetime.fromtimestamp(int(epoch), timezone.utc) if epoch else datetime.now(timezone.utc)
    return moment.replace(microsecond=0).isoformat()


_REQUIRED = {
    "encoder": ("name", "num_layers", "layers_run"),
    "dataset": ("name",),
    "calibration": ("r_per_layer", "schedule"),
}


def load_record(path: str | os.PathLike) -> ThresholdRecord:
    """Read and validate one thresholds file; every problem is a ThresholdCacheError naming it."""
    path = Path(path)
    hint = "fix or delete the file, or recreate it with `dymu-eval calibrate ... --overwrite`"
    if path.is_dir():
        raise ThresholdCacheError(f"thresholds file {path} is a folder; give a thresholds .json file")
    if not path.is_file():
        raise ThresholdCacheError(f"thresholds file {path} not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ThresholdCacheError(f"thresholds file {path} is not valid JSON ({exc}); {hint}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ThresholdCacheError(f"{path} is not a dymu-eval thresholds file (no \"format\": \"{FORMAT}\"); {hint}")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ThresholdCacheError(
            f"thresholds file {path} has format_version {version!r}; this dymu-eval ({__version__}) reads "
            f"version {FORMAT_VERSION}. Use a matching dymu-eval or recalibrate with `dymu-eval calibrate`"
        )
    for section in ("encoder", "dataset", "calibration", "thresholds"):
        if section not in data:
            raise ThresholdCacheError(f"thresholds file {path} lacks the \"{section}\" section; {hint}")
    for section, keys in _REQUIRED.items():
        if not isinstance(data[section], dict):
            raise ThresholdCacheError(f"thresholds file {path}: \"{section}\" must be an object; {hint}")
        for key in keys:
            if key not in data[section]:
                raise ThresholdCacheError(f"thresholds file {path} lacks \"{section}.{key}\"; {hint}")
    known = set(EncoderIdentity.__dataclass_fields__)
    unknown = set(data["encoder"]) - known
    if unknown:
        raise ThresholdCacheError(f"thresholds file {path}: unknown encoder fields {sorted(unknown)}; {hint}")
    encoder = EncoderIdentity(**data["encoder"])
    thresholds = data["thresholds"]
    if not isinstance(thresholds, list) or len(thresholds) != encoder.num_layers:
        count = len(thresholds) if isinstance(thresholds, list) else type(thresholds).__name__
        raise ThresholdCacheError(
            f"thresholds file {path} holds {count} thresholds but its encoder has {encoder.num_layers} layers; {hint}"
        )
    for i, t in enumerate(thresholds):
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t)):
            raise ThresholdCacheError(f"thresholds file {path}: layer {i} threshold {t!r} is not a number or null; "
                                      f"{hint}")
    if len(data["calibration"]["r_per_layer"]) != encoder.num_layers:
        raise ThresholdCacheError(
            f"thresholds file {path}: calibration.r_per_layer has {len(data['calibration']['r_per_layer'])} entries "
            f"for {encoder.num_layers} layers; {hint}"
        )
    return ThresholdRecord(
        encoder=encoder,
        dataset=data["dataset"],
        calibration=data["calibration"],
        thresholds=thresholds,
        token_stats=data.get("token_stats"),
        provenance=data.get("provenance"),
        tool_version=data.get("tool_version", "unknown"),
        created=data.get("created"),
        source_path=path,
    )


def _umask() -> int:
    """This process's umask (reading it means setting it; it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_record(record: ThresholdRecord, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``record`` atomically; refuse to replace an existing file unless ``overwrite``."""
    path = Path(path)
    if path.is_dir():
        raise ThresholdCacheError(f"{path} is a folder; give the thresholds file's name (e.g. {path / 'name.json'})")
    if path.exists() and not overwrite:
        raise ThresholdCacheError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    text = record.dumps()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide the file from a shared cache's other users
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if not overwrite:
            # a concurrent writer may have created it meanwhile: link fails if it exists
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise ThresholdCacheError(
                    f"{path} already exists; pass overwrite=True (--overwrite) to replace it") from None
            except OSError:
                os.replace(tmp, path)  # file systems without hard links
            else:
                os.unlink(tmp)
        else:
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


# -- the cache --------------------------------------------------------------------------------


def user_thresholds_dir() -> Path:
    from .paths import user_cache_dir

    return user_cache_dir() / "thresholds"


class ThresholdCache:
    """Search order: explicit path, the repository's ``thresholds/``, the user cache."""

    def __init__(self, dirs: Sequence[str | os.PathLike] | None = None):
        if dirs is None:
            from .paths import thresholds_dir

            dirs = [thresholds_dir(), user_thresholds_dir()]
        self.dirs = [Path(d) for d in dirs]

    @property
    def write_dir(self) -> Path:
        """Where new calibrations go by default (the last, user-writable folder)."""
        return self.dirs[-1]

    def default_path(self, record: ThresholdRecord) -> Path:
        return self.write_dir / f"{record.key}.json"

    def save(self, record: ThresholdRecord, path: str | os.PathLike | None = None, overwrite: bool = False) -> Path:
        return save_record(record, path or self.default_path(record), overwrite=overwrite)

    def files(self) -> list[Path]:
        """Every ``*.json`` in the search folders, folder order then name order."""
        out: list[Path] = []
        for d in self.dirs:
            if d.is_dir():
                out.extend(sorted(p for p in d.glob("*.json") if p.is_file()))
        return out

    def entries(self) -> list[tuple[Path, ThresholdRecord | ThresholdCacheError]]:
        """Every file with its record, or the error that loading it raised (for `list`)."""
        out: list[tuple[Path, ThresholdRecord | ThresholdCacheError]] = []
        for p in self.files():
            try:
                out.append((p, load_record(p)))
            except ThresholdCacheError as exc:
                out.append((p, exc))
        return out

    def lookup(
        self,
        encoder_id: str | None,
        dataset: str | None,
        level: str | None = None,
        r: int | None = None,
        schedule: str = DEFAULT_SCHEDULE,
        path: str | os.PathLike | None = None,
        merge_order: str = DEFAULT_MERGE_ORDER,
    ) -> ThresholdRecord:
        """The record for this encoder (name, any alias, or folder name), dataset, schedule,
        level or r, and merge order. ``path`` (a file) wins over everything (its order is checked
        where a policy is built). A miss raises ThresholdCacheError with the `dymu-eval calibrate`
        command that would produce the entry."""
        if path is not None:
            return load_record(path)
        if encoder_id is None or dataset is None:
            raise ThresholdCacheError("threshold lookup needs an encoder and a dataset name, or an explicit file")
        if (level is None) == (r is None):
            raise ThresholdCacheError("threshold lookup needs exactly one of level or r")
        key = record_key(encoder_id, dataset, schedule, level, r, merge_order)
        other_order: list[str] = []
        for d in self.dirs:  # fast path: the file named by the key
            candidate = d / f"{key}.json"
            if candidate.is_file():
                rec = load_record(candidate)
                if rec.merge_order == merge_order:
                    return rec
                other_order.append(f"{candidate} ({rec.merge_order} order)")
        broken: list[str] = []
        for p, rec in self.entries():  # aliases (e.g. a LLaVA checkpoint name for its CLIP tower)
            if isinstance(rec, ThresholdCacheError):
                broken.append(p.name)
                continue
            if _matches(rec, encoder_id, dataset, level, r, schedule, merge_order):
                return rec
        searched = ", ".join(str(d) for d in self.dirs)
        note = f" (unreadable files skipped: {', '.join(broken)})" if broken else ""
        if other_order:
            note += (f"; calibrated under another merge order, not used: {', '.join(other_order)} "
                     "(add --overwrite to replace it)")
        raise ThresholdCacheError(
            f"no thresholds for encoder {encoder_id}, dataset {dataset}, schedule {schedule}, "
            f"{'level ' + level if level else 'r ' + str(r)}, merge_order {merge_order} in {searched}{note}. "
            "Produce them with:\n  " + _hint(calibrate_command(encoder_id, dataset, level, r, schedule, merge_order))
        )


def _matches(rec: ThresholdRecord, encoder_id: str, dataset: str, level, r, schedule: str, merge_order: str) -> bool:
    names = {slug(rec.encoder.name), *(slug(a) for a in rec.encoder.aliases)}
    if slug(encoder_id) not in names or slug(rec.dataset["name"]) != slug(dataset) or rec.schedule != schedule:
        return False
    if rec.merge_order != merge_order:
        return False
    if level is not None:
        return rec.level == level
    return rec.level is None and rec.calibration.get("r") == r

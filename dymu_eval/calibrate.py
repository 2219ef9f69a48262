"""Threshold finding (DyMU, arXiv 2504.17040): per layer, the batch-level top-k merge records tau_i.

For each batch of B images (per process) the encoder runs with ``merge.BatchTopK``: in layer i
the B*r_i best A->B edges of the whole batch merge (CLS and padding never count) and
tau_i = the best score that did NOT merge, clamped at 0. A layer's final threshold is the
arithmetic mean of its per-batch tau_i over all batches of all processes; every batch step
averages the processes' values first (B is the per-process batch), which is what the
reference's running mean followed by an all-reduce average computes.

Choices, documented:

* Image order is the source's deterministic order. Global step g gives process k the images
  ``[(g*W + k)*B, (g*W + k + 1)*B)`` (W processes), so W processes with batch B see exactly
  the batches one process would see, and produce the same per-batch taus and thresholds.
* The trailing images that do not fill a whole step of W*B are dropped (the reference only
  uses whole batches; a smaller batch would give a differently defined tau). Their number is
  recorded as ``images_dropped``.
* Bad images stop calibration with InputImageError naming the path, unless ``skip_bad``: then
  the batch runs with the images that decoded (merging B'*r_i edges), every skipped path is
  recorded in the record and reported, and nothing is ever averaged from a broken image.
* A layer whose schedule gives r = 0, or that the VLM does not run, gets threshold null.
* Tokens are laid out after each merge in ``settings.merge_order`` (the reference code's
  order by default, ``merge.order``), recorded as ``calibration.merge_order``: DToMe must run
  in the same order to give the token counts the thresholds were tuned for.
* Every real A->B edge of the batch is ranked, as in the paper and the reference's batch path
  (no per-image cap: without a class token and with an odd token count the cap would leave
  edges out of the ranking and could drop tau to 0).
* Token statistics are measured AFTER calibration: DToMe with the final thresholds on the
  first ``stats_images`` calibration images, counting the visual tokens the LLM would get
  (tokens at the read layer, CLS excluded), i.e. what inference will produce, not the fixed
  B*r_i counts of the calibration merge. ``settings.call`` is the calling pattern inference
  will use (``merge.Threshold``; LLaVA-1.5's ``per_image`` by default), recorded with them.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from . import __version__
from .errors import ConfigError, InputImageError
from .images import ImageSource
from .merge import BatchTopK, Threshold
from .thresholds import (
    CALIBRATED_PROVENANCE,
    EncoderIdentity,
    ThresholdRecord,
    created_now,
    dtome_settings,
    encoder_fingerprint,
)
from .vision.preprocess import FamilyPreprocess
from .vocabulary import (
    DEFAULT_MERGE_ORDER,
    DEFAULT_SCHEDULE,
    ENCODER_CALLS,
    check_encoder_call,
    check_merge_order,
)

Preprocess = Callable[[list[Image.Image]], torch.Tensor]


# -- processes --------------------------------------------------------------------------------


class Processes:
    """The process group calibration averages over (a single process when not distributed).

    Only small CPU tensors travel, so a gloo group is used even when the default group is
    NCCL (e.g. under ``accelerate launch`` on GPUs).
    """

    def __init__(self) -> None:
        import torch.distributed as dist

        self._dist = dist if dist.is_available() and dist.is_initialized() else None
        self.rank = self._dist.get_rank() if self._dist else 0
        self.world = self._dist.get_world_size() if self._dist else 1
        self._group = None
        if self._dist is not None and self._dist.get_backend() != "gloo":
            self._group = self._dist.new_group(backend="gloo")

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self._dist is not None and self.world > 1:
            self._dist.all_reduce(tensor, op=self._dist.ReduceOp.SUM, group=self._group)
        return tensor

    def gather(self, obj: Any) -> list[Any]:
        if self._dist is None or self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        self._dist.all_gather_object(out, obj, group=self._group)
        return out


# -- batches of decoded images ----------------------------------------------------------------


class _Batches(Dataset):
    """Item j = the j-th batch of image indices, decoded and preprocessed. Bad images come back
    as (label, reason) so the main process decides (workers must not raise: their exceptions
    lose the path in DataLoader's wrapping)."""

    def __init__(self, source: ImageSource, batches: list[list[int]], preprocess: Preprocess):
        self.source, self.batches, self.preprocess = source, batches, preprocess

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, j: int):
        good: list[Image.Image] = []
        bad: list[tuple[str, str]] = []
        for index in self.batches[j]:
            try:
                good.append(self.source.load(index))
            except InputImageError as exc:
                bad.append((self.source.label(index), str(exc)))
        pixels = self.preprocess(good) if good else None
        return pixels, bad


def _as_is(item):
    return item


def _iterate(source: ImageSource, batches: list[list[int]], preprocess: Preprocess, workers: int):
    loader = DataLoader(
        _Batches(source, batches, preprocess), batch_size=None, shuffle=False,
        num_workers=workers, collate_fn=_as_is,
    )
    return iter(loader)


def _check_bad(bad: list[tuple[str, str]], skip_bad: bool, skipped: dict[str, str]) -> None:
    """Stop at the first bad image, or (``skip_bad``) note each under its label, the reason without
    the label the image error already starts with."""
    for label, reason in bad:
        if not skip_bad:
            raise InputImageError(f"{reason} (skip_bad=True, or --skip-bad, skips bad images and lists them "
                                  "at the end)")
        skipped.setdefault(label, reason.removeprefix(f"{label}: "))


# -- calibration ------------------------------------------------------------------------------


@dataclass
class CalibrationSettings:
    """How calibration runs; the record's ``calibration`` block repeats these besides the counts."""

    batch_size: int = 64  # images per batch per process
    num_images: int | None = None  # use the first N images of the source
    schedule: str = DEFAULT_SCHEDULE
    level: str | None = None
    r: int | None = None
    seed: int = 0
    skip_bad: bool = False  # skip undecodable images (listed in the record) instead of stopping
    stats_images: int = 1000  # images for the token statistics under the found thresholds (0: none)
    workers: int = 0  # DataLoader worker processes decoding images
    progress: bool = True
    merge_order: str = DEFAULT_MERGE_ORDER  # token order after each merge (recorded; DToMe must use it)
    call: str = ENCODER_CALLS[0]  # the family's encoder calling pattern (merge.Threshold)


@dataclass
class _Found:
    """What the batch loop found: per-layer thresholds and what it used."""

    thresholds: list[float | None]
    batches: int
    images_used: int


def calibrate(runner, images: ImageSource, r_per_layer: Sequence[int], settings: CalibrationSettings | None = None, *,
              preprocess: Preprocess | None = None, encoder_name: str = "encoder",
              created: str | None = None) -> ThresholdRecord:
    """Find per-layer DToMe thresholds for ``runner`` (a ``vision.VisionRunner``) on ``images``.

    ``r_per_layer`` has one entry per encoder layer (``merge.merges_per_layer``); only the
    first ``runner.default_layers_run`` layers run. Returns the record (not yet saved).
    """
    s = settings or CalibrationSettings()
    check_merge_order(s.merge_order)
    check_encoder_call(s.call)
    procs = Processes()
    r_per_layer = _checked_schedule(runner, list(r_per_layer), s.batch_size)
    source = images.head(s.num_images)
    steps = _whole_steps(len(source), s.batch_size, procs.world)
    preprocess = preprocess or FamilyPreprocess(runner.family, runner.image_size)
    torch.manual_seed(s.seed)
    skipped: dict[str, str] = {}  # in the calibration batches
    skipped_in_stats: dict[str, str] = {}
    found = _find_thresholds(runner, source, r_per_layer, steps, preprocess, procs, s, skipped)
    token_stats = None
    if s.stats_images > 0:
        policy = Threshold(*dtome_settings(found.thresholds, r_per_layer), merge_order=s.merge_order, call=s.call)
        token_stats = _token_stats(runner, source, policy, preprocess, procs, min(s.stats_images, len(source)),
                                   s, skipped_in_stats)
        token_stats["call"] = s.call
    calibration = {
        "batch_size": s.batch_size, "processes": procs.world,
        "dtype": str(next(runner.model.parameters()).dtype).replace("torch.", ""),
        "seed": s.seed, "level": s.level, "r": s.r, "r_total": int(sum(r_per_layer)), "r_per_layer": r_per_layer,
        "schedule": s.schedule, "merge_order": s.merge_order, "preprocess": _describe(preprocess),
        "batches": found.batches,
        "images_used": found.images_used, "images_dropped": len(source) - steps * s.batch_size * procs.world,
        "skipped": _skipped_entries(procs.gather(skipped), procs.gather(skipped_in_stats)),
        "notes": source.notes,
    }
    return ThresholdRecord(
        encoder=encoder_identity(runner, encoder_name), dataset=source.identity(), calibration=calibration,
        thresholds=found.thresholds, token_stats=token_stats,
        provenance=f"{CALIBRATED_PROVENANCE} {__version__} (batch top-k threshold finding, DyMU arXiv 2504.17040)",
        tool_version=__version__, created=created if created is not None else created_now(),
    )


def _checked_schedule(runner, r_per_layer: list[int], batch_size: int) -> list[int]:
    if len(r_per_layer) != runner.num_layers:
        raise ConfigError(
            f"r_per_layer has {len(r_per_layer)} entries but the encoder has {runner.num_layers} layers"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not any(r_per_layer[:runner.default_layers_run]):
        raise ConfigError("every layer the VLM runs has r = 0: there is nothing to calibrate")
    return r_per_layer


def _whole_steps(n_images: int, batch_size: int, world: int) -> int:
    """Steps of one batch per process that the images fill completely."""
    steps = n_images // (batch_size * world)
    if steps == 0:
        raise ConfigError(
            f"{n_images} images cannot fill one batch of {batch_size} on each of {world} processes; "
            "use more images or a smaller batch_size"
        )
    return steps


def _find_thresholds(runner, source: ImageSource, r_per_layer: list[int], steps: int, preprocess: Preprocess,
                     procs: Processes, s: CalibrationSettings, skipped: dict[str, str]) -> _Found:
    """The batch loop: BatchTopK per batch, per-layer taus averaged over processes, then over steps."""
    layers_run, b = runner.default_layers_run, s.batch_size
    own_batches = [list(range((g * procs.world + procs.rank) * b, (g * procs.world + procs.rank + 1) * b))
                   for g in range(steps)]
    policy = BatchTopK(r_per_layer, merge_order=s.merge_order)
    total = torch.zeros(layers_run, dtype=torch.float64)
    used_steps = images_used = 0
    bar = tqdm(total=steps, desc="calibrating", unit="batch", disable=not s.progress or procs.rank != 0)
    for pixels, bad in _iterate(source, own_batches, preprocess, s.workers):
        _check_bad(bad, s.skip_bad, skipped)
        step = torch.zeros(layers_run + 2, dtype=torch.float64)  # taus, contributed a batch, images
        if pixels is not None:
            policy.reset()
            runner(pixels, policy, layers_run)
            step[:layers_run] = torch.tensor([t if t is not None else 0.0 for t in policy.thresholds[:layers_run]],
                                             dtype=torch.float64)
            step[layers_run] = 1.0
            step[layers_run + 1] = pixels.shape[0]
        procs.sum(step)
        contributors = step[layers_run].item()
        if contributors > 0:
            total += step[:layers_run] / contributors
            used_steps += 1
            images_used += int(step[layers_run + 1].item())
        bar.update(1)
        bar.set_postfix(tau=f"{(total / max(used_steps, 1)).mean().item():.4f}", skipped=len(skipped))
    bar.close()
    if used_steps == 0:
        label, reason = next(iter(skipped.items()))
        raise InputImageError(f"no calibration image could be decoded ({len(skipped)} skipped, the first "
                              f"{label}: {reason})")
    mean = (total / used_steps).tolist()
    thresholds: list[float | None] = [None] * runner.num_layers
    for i in range(layers_run):
        if r_per_layer[i] > 0:
            thresholds[i] = float(mean[i])
    return _Found(thresholds, used_steps * procs.world, images_used)


def _describe(preprocess: Preprocess) -> str:
    describe = getattr(preprocess, "describe", None)
    return describe() if callable(describe) else type(preprocess).__name__


def _merge_skipped(per_rank: list[dict[str, str]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for part in per_rank:
        for label, reason in part.items():
            merged.setdefault(label, reason)
    return merged


def _skipped_entries(in_batches: list[dict[str, str]], in_stats: list[dict[str, str]]) -> list[dict[str, str]]:
    """The record's ``skipped`` list (every process's): each bad image once, with where it was met,
    ``calibration`` (its batch ran short) or ``token statistics`` (only there, e.g. a trailing image
    that calibration had dropped already)."""
    stages = {label: (reason, "token statistics") for label, reason in _merge_skipped(in_stats).items()}
    stages.update({label: (reason, "calibration") for label, reason in _merge_skipped(in_batches).items()})
    return [{"image": label, "reason": reason, "stage": stage} for label, (reason, stage) in sorted(stages.items())]


def _token_stats(runner, source: ImageSource, policy: Threshold, preprocess: Preprocess, procs: Processes,
                 count: int, s: CalibrationSettings, skipped: dict[str, str]) -> dict[str, Any]:
    """Visual tokens per image (CLS excluded) under DToMe with the found thresholds."""
    layers_run, b = runner.default_layers_run, s.batch_size
    starts = range(procs.rank * b, count, procs.world * b)
    own_batches = [list(range(start, min(start + b, count))) for start in starts]
    per_layer: list[list[int]] = []
    bar = tqdm(total=len(own_batches), desc="token statistics", unit="batch", disable=not s.progress or procs.rank != 0)
    for pixels, bad in _iterate(source, own_batches, preprocess, s.workers):
        _check_bad(bad, s.skip_bad, skipped)
        if pixels is not None:
            per_layer.extend(runner(pixels, policy, layers_run).counts.tolist())
        bar.update(1)
    bar.close()
    rows = [row for part in procs.gather(per_layer) for row in part]
    cls = 1 if runner.has_cls else 0
    final = [row[-1] - cls for row in rows]
    if not final:
        return {"images": 0}
    columns = list(zip(*rows))
    return {
        "counted": "visual tokens at the read layer (CLS excluded) under DToMe with these thresholds; "
                   "per_layer_mean[0] is after the embedding, [i] after block i",
        "images": len(final),
        "patches": rows[0][0] - cls,
        "mean": statistics.fmean(final),
        "std": statistics.pstdev(final) if len(final) > 1 else 0.0,
        "min": min(final),
        "max": max(final),
        "per_layer_mean": [round(statistics.fmean(c) - cls, 4) for c in columns],
    }


def encoder_identity(runner, name: str) -> EncoderIdentity:
    """The identity a thresholds file records for the encoder behind ``runner``."""
    adapter = runner.adapter
    feature_layer = getattr(runner, "feature_layer", None)
    return EncoderIdentity(
        name=name,
        num_layers=runner.num_layers,
        layers_run=runner.default_layers_run,
        fingerprint=encoder_fingerprint(runner.model),
        family=runner.family,
        read_layer=feature_layer if feature_layer is not None else -1,
        has_cls=runner.has_cls,
        hidden_size=int(adapter.config.hidden_size),
        patch_size=adapter.patch_size,
        image_size=adapter.image_size,
    )

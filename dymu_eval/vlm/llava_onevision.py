"""LLaVA-OneVision (``LlavaOnevisionForConditionalGeneration``: SigLIP + Qwen2, AnyRes images, video).

Every OneVision quirk lives here. The encoder is SigLIP (no CLS) read at the config's
``vision_feature_layer`` (-1: the last block, before ``post_layernorm``) with the "full"
strategy. Every crop and every frame of a batch goes through the reduced encoder in one
call, each merged on its own. The projector runs on merged rows only. Then the sequence the
unmodified model builds is rebuilt as a virtual layout:

- an AnyRes image is the base crop, then the grid canvas of the other crops, unpadded to the
  image's aspect ratio, bilinearly downsampled when it exceeds ``anyres_max_N`` crops, with one
  ``image_newline`` per canvas row (``pack_image_features``);
- an image of a multi-image sample (the processor's ``batch_num_images`` > 1) is its one crop
  and one newline;
- a video is every frame 2x2 bilinearly pooled (27 -> 14 per side at 384 px), then one newline
  (``get_video_features``).

Where the unmodified model feeds a mix of patches at one position (the bilinear maps), the mix
is composed with the merge map (patch -> merged row), so each position is a weighted mix of
merged rows; the distinct mixes are the LLM's unique rows and the map stays one-hot
(as VTU requires). With no reduction every position is its own row: the unmodified model.

The fixed-budget baselines (random, pool, VisionZip) select rows per crop or frame after the
encoder (27x27 patches at 384 px: a pool factor must divide 27). Pool and VisionZip give every
patch a row, so the mixes above apply unchanged. Random pruning drops patches: a position's mix
is then renormalized over its kept patches (``interpolate(x * kept) / interpolate(kept)``: the
bilinear mix of the kept patches alone), a position none of whose patches was kept is dropped,
newlines stay, and every remaining position keeps its own row at its original position (as
random pruning does on LLaVA-1.5). Keeping every patch gives the unmodified model.

Frames are sampled like lmms-eval's ``llava_hf``: ``np.linspace(0, n - 1, max_frames_num,
dtype=int)`` over the decoded frames, read with decord (a dependency of this project for
exactly that reason), repeats included when the video is shorter than asked.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..accounting import RequestCounts
from ..errors import ConfigError, InputImageError
from ..merge import NoMerge
from ..methods import FAMILIES, Arg, FamilySpec, parse
from ..vision import EncoderOutput
from ..vocabulary import LAYOUTS, MAX_FRAMES, MULTI_IMAGE_MODES, ONEVISION_7B
from .anyres import (
    DROPPED,
    GridPiece,
    count_positions,
    resize_placeholder_runs,
    stack_mixes,
)
from .checkpoint import load_checkpoint
from .efficiency import image_counts
from .llava import IMAGE_TOKEN, jpeg_bytes_per_pixel
from .llava import simple_prompt as _templated
from .pipeline import PipelineBase, Prepared, RequestRows
from .reduction import Reduction

VIDEO_TOKEN = "<video>"
# The reference OneVision encodes all crops (and frames) of a request in one call, so DToMe
# follows the reference's batch path (merge.Threshold ``call``).
ENCODER_CALL = "batched"


@dataclass
class Video:
    """Sampled frames (F, H, W, 3) uint8 of one video, where they came from and how many differ."""

    frames: np.ndarray
    source: str = "frames"
    distinct_frames: int | None = None


@dataclass
class Request:
    """One prompt (already templated, one ``<image>`` per image, one ``<video>`` per video) and its media."""

    prompt: str
    images: list[Image.Image] = field(default_factory=list)
    videos: list[Video] = field(default_factory=list)
    name: str = "request"  # used in error messages (task/doc id)


# ------------------------------------------------------------------------------------- loading
def load_onevision(pretrained: str, device_map: str, dtype: str = "auto", attn_implementation: str | None = None):
    """(model, processor) of a LLaVA-OneVision checkpoint; ConfigError for other architectures."""
    from transformers import LlavaOnevisionForConditionalGeneration

    return load_checkpoint(pretrained, LlavaOnevisionForConditionalGeneration, "llava_onevision",
                           "dymu_llava_onevision", "e.g. llava-hf/llava-onevision-qwen2-7b-ov-hf", device_map, dtype,
                           attn_implementation)


def frame_indices(total: int, max_frames_num: int) -> np.ndarray:
    """lmms-eval ``llava_hf.load_video``'s uniform sampling: repeats when the video is short."""
    return np.linspace(0, total - 1, max_frames_num, dtype=int)


def load_video(path: str, max_frames_num: int, name: str = "request") -> Video:
    """Decode ``path`` with decord and sample ``max_frames_num`` frames uniformly (as ``llava_hf``)."""
    if isinstance(max_frames_num, bool) or not isinstance(max_frames_num, int) or max_frames_num < 1:
        raise ConfigError(f"{name}: max_frames_num={max_frames_num!r} must be an integer >= 1")
    if not os.path.isfile(path):
        raise InputImageError(f"{name}: video file {path} does not exist")
    from decord import VideoReader, cpu

    try:
        reader = VideoReader(path, ctx=cpu(0))
        total = len(reader)
        if total < 1:
            raise InputImageError(f"{name}: video {path} has no frames")
        idx = frame_indices(total, max_frames_num)
        frames = reader.get_batch(idx.tolist()).asnumpy()
    except InputImageError:
        raise
    except Exception as exc:  # decord raises its own DECORDError (and RuntimeError) for bad files
        raise InputImageError(f"{name}: cannot decode video {path} ({type(exc).__name__}: {exc})") from exc
    return Video(frames, source=path, distinct_frames=int(np.unique(idx).size))


# ------------------------------------------------------------------------------------- prompts
def simple_prompt(tokenizer, context: str, n_images: int, n_videos: int,
                  continuation: str | None = None) -> tuple[str, str | None]:
    """What lmms-eval's simple ``llava_hf`` feeds the model: when the context has no ``<image>``,
    ``<image>`` x n (or ``<video>`` x n for a video task) and a newline first; then the
    tokenizer's chat template."""
    if IMAGE_TOKEN not in context:
        if n_images:
            context = " ".join([IMAGE_TOKEN] * n_images) + "\n" + context
        elif n_videos:
            context = " ".join([VIDEO_TOKEN] * n_videos) + "\n" + context
    return _templated(tokenizer, context, 0, continuation)


# ------------------------------------------------------------------------------------- pipeline
class OnevisionPipeline(PipelineBase):
    """Runs batches of requests through a LLaVA-OneVision model with a given reduction."""

    ENCODER_CALL = ENCODER_CALL

    def __init__(self, model, processor, reduction: Reduction | None = None):
        cfg = model.config
        if getattr(cfg, "model_type", None) != "llava_onevision":
            raise ConfigError(f"{type(model).__name__} is not a LLaVA-OneVision model")
        self.image_token_id = int(cfg.image_token_index)
        self.video_token_id = int(cfg.video_token_index)
        self.grid_pinpoints = cfg.image_grid_pinpoints
        self.aspect = cfg.vision_aspect_ratio or "anyres_max_9"
        if not self.aspect.startswith("anyres_max_"):
            raise ConfigError(f"vision_aspect_ratio={self.aspect!r} is not supported (anyres_max_N)")
        self.max_crops = int(self.aspect[len("anyres_max_"):])
        self.crop_size = cfg.vision_config.image_size
        self.side = cfg.vision_config.image_size // cfg.vision_config.patch_size  # 27 at 384 px / 14
        super().__init__(model, processor, reduction)
        # SigLIP has no CLS ("full"); a tower with one (the offline micro OneVision's DINOv2) drops it
        # after the encoder ("default"), so the patch grid is the same either way
        strategy = getattr(cfg, "vision_feature_select_strategy", "full")
        if strategy != ("default" if self.runner.has_cls else "full"):
            raise ConfigError(f"vision_feature_select_strategy={strategy!r} does not fit a {self.runner.family} "
                              f"tower {'with' if self.runner.has_cls else 'without'} a CLS token (use "
                              f"{'default' if self.runner.has_cls else 'full'!r})")
        self.cls = int(self.runner.has_cls)  # rows before the patches in every crop's merged tokens
        self.image_newline = model.model.image_newline
        self.multi_image = "anyres"  # how a request's several images reach the processor (see _process)
        self.layout = "stock"  # stock: the unmodified model's sequence; official: the DyMU code's (see media)

    # -- processor --------------------------------------------------------------------------
    def _process(self, req: Request, text: str | None = None) -> tuple[torch.Tensor, dict]:
        """(input_ids (L,), the processor's pixel outputs) as the unmodified model gets them.

        Several images go to the processor as a flat list, as lmms-eval's ``llava_hf`` passes
        them (each image gets its own AnyRes crops), or, with ``multi_image="single"``, as one
        nested sample (transformers' multi-image mode: one crop and one newline each)."""
        text = req.prompt if text is None else text
        for token, items, what in ((IMAGE_TOKEN, req.images, "image"), (VIDEO_TOKEN, req.videos, "video")):
            if text.count(token) != len(items):
                raise ConfigError(f"{req.name}: the prompt has {text.count(token)} {token} placeholder(s) but "
                                  f"{len(items)} {what}(s) were given; each needs exactly one placeholder")
        images: Any = None
        if req.images:
            images = [list(req.images)] if self.multi_image == "single" and len(req.images) > 1 else list(req.images)
        videos = [v.frames for v in req.videos] or None
        try:
            out = self.processor(images=images, videos=videos, text=text, return_tensors="pt")
        except (OSError, ValueError, TypeError) as exc:
            error = InputImageError if (req.images or req.videos) else ConfigError
            raise error(f"{req.name}: the LLaVA-OneVision processor rejected the input ({exc})") from exc
        ids = out["input_ids"][0]
        if self.layout != "stock":  # the processor sized every placeholder run for the stock layout
            crops, packs = self._crops(out)
            vids = self._videos(out)
            counts = [count_positions(segs) for segs, _ in self.media(packs, crops, vids)]
            stock = [count_positions(self.image_segments(p)) for p in packs]
            stock += [count_positions(self.video_segments(v.shape[0])) for v in vids]
            ids = resize_placeholder_runs(ids, self.image_token_id, stock[:len(packs)], counts[:len(packs)])
            ids = resize_placeholder_runs(ids, self.video_token_id, stock[len(packs):], counts[len(packs):])
        return ids, out

    @staticmethod
    def _videos(out: dict) -> list[torch.Tensor]:
        vids = out.get("pixel_values_videos")
        return [] if vids is None else [vids[i] for i in range(vids.shape[0])]

    def _crops(self, out: dict) -> tuple[list[torch.Tensor], list[dict]]:
        """Per image: its crops (n, 3, H, W) in the model's order and how to pack them."""
        from transformers.models.llava_onevision.modeling_llava_onevision import (
            get_anyres_image_grid_shape,
            image_size_to_num_patches,
        )

        pv = out.get("pixel_values")
        if pv is None:
            return [], []
        sizes = out["image_sizes"]
        counts = out.get("batch_num_images")
        per_image = [int(n) for n in counts for _ in range(int(n))] if counts is not None else [1] * len(sizes)
        crops, packs = [], []
        for i, size in enumerate(sizes):
            size = [int(s) for s in size.tolist()]
            if per_image[i] == 1:
                n = image_size_to_num_patches(size, self.grid_pinpoints, self.crop_size)
                nph, npw = get_anyres_image_grid_shape(size, self.grid_pinpoints, self.crop_size)
                packs.append({"anyres": True, "size": size, "grid": (nph, npw)})
            else:
                n = 1
                packs.append({"anyres": False})
            crops.append(pv[i, :n] if pv.dim() == 5 else pv[i:i + n])
        return crops, packs

    # -- the stock layout ------------------------------------------------------------------
    def image_segments(self, pack: dict) -> list[GridPiece]:
        """One image as ``pack_image_features`` lays it out: base crop first; then the grid canvas,
        unpadded, downsampled above ``anyres_max_N``, one newline per row (or, in a multi-image
        sample, the single crop and one newline)."""
        from transformers.models.llava_onevision.modeling_llava_onevision import (
            unpad_image,
        )

        s, n = self.side, self.side * self.side
        base = GridPiece(torch.arange(n).view(s, s))
        if not pack["anyres"]:
            return [base, GridPiece(None)]
        nph, npw = pack["grid"]
        canvas = (n + torch.arange(nph * npw * n)).view(nph, npw, s, s).permute(0, 2, 1, 3).reshape(nph * s, npw * s)
        canvas = unpad_image(canvas[None], pack["size"])[0]
        h, w = canvas.shape
        ratio = math.sqrt(h * w / (self.max_crops * s ** 2))
        size = (int(h // ratio), int(w // ratio)) if ratio > 1.1 else None
        return [base, GridPiece(canvas, size, row_newlines=True)]

    def official_image_segments(self, n_crops: int) -> list[GridPiece]:
        """The DyMU code's image sequence when it merges: the crops flattened in crop order (base
        first), no unpadding and no newline; a lone crop (multi-image) keeps its newline."""
        s, n = self.side, self.side * self.side
        crops = [GridPiece(c * n + torch.arange(n).view(s, s)) for c in range(n_crops)]
        return crops + ([GridPiece(None)] if n_crops == 1 else [])

    def official_video_segments(self, frames: int) -> list[GridPiece]:
        """The DyMU code's video sequence when it merges: every frame unpooled, then one newline."""
        s, n = self.side, self.side * self.side
        return [GridPiece(f * n + torch.arange(n).view(s, s)) for f in range(frames)] + [GridPiece(None)]

    def media(self, packs: list[dict], crops: list[torch.Tensor], vids: list[torch.Tensor]):
        """Per image, then per video: (its segments in the chosen layout, its crops/frames)."""
        if self.layout == "official":
            out = [(self.official_image_segments(c.shape[0]), c.shape[0]) for c in crops]
            return out + [(self.official_video_segments(v.shape[0]), v.shape[0]) for v in vids]
        out = [(self.image_segments(p), c.shape[0]) for p, c in zip(packs, crops)]
        return out + [(self.video_segments(v.shape[0]), v.shape[0]) for v in vids]

    def video_segments(self, frames: int) -> list[GridPiece]:
        """One video as ``get_video_features`` lays it out: every frame pooled bilinearly to
        ceil(side/2) per side, then one newline at the end."""
        s, n = self.side, self.side * self.side
        pooled = (math.ceil(s / 2), math.ceil(s / 2))
        return [GridPiece(f * n + torch.arange(n).view(s, s), pooled) for f in range(frames)] + [GridPiece(None)]

    # -- vision -----------------------------------------------------------------------------
    def shares_rows(self, enc: EncoderOutput | None) -> bool:
        """Identical mixes (and every newline) share one row only when the encoder merges or a
        selection made a row of several patches (pool, VisionZip); otherwise every position keeps
        its own row, as in the unmodified model (random pruning, or a selection that keeps every patch)."""
        if not isinstance(self.reduction.policy, NoMerge):
            return True
        return enc is not None and self.reduction.selector is not None and bool((enc.sizes[enc.valid] > 1).any())

    # -- batch preparation ------------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, requests: Sequence[Request]) -> Prepared:
        """Tokenize, encode and project; build unique rows and the virtual layout per request."""
        memory = self.accounting.start_batch()
        ids, pieces, items = [], [], []
        for req in requests:
            input_ids, out = self._process(req)
            ids.append(input_ids)
            crops, packs = self._crops(out)
            vids = self._videos(out)
            items.append((crops, packs, vids))
            pieces += crops + vids
        enc, enc_ms, offsets, merged = None, 0.0, [], None
        if self.cls and self.reduction.selector is not None:
            raise ConfigError(f"method={self.reduction.method} is not supported on a LLaVA-OneVision tower with a "
                              "CLS token")
        if pieces:
            enc, enc_ms = self.encode(torch.cat(pieces, 0))
            offsets, merged = self._merged_rows(enc)
        shares = self.shares_rows(enc)
        built, masks, stats, counts = [], [], [], []
        first = 0  # index of this request's first crop/frame in the encoder batch
        n_pieces = sum(p.shape[0] for p in pieces) if pieces else 0
        for req, input_ids, (crops, packs, vids) in zip(requests, ids, items):
            n_req = sum(c.shape[0] for c in crops) + sum(v.shape[0] for v in vids)
            one, st = self._sequence(req, input_ids, packs, vids, enc, offsets, merged, first, crops, shares)
            enc_counts, enc_matched = image_counts(enc, self.reduction.policy, first, n_req)
            selected = st["encoder_tokens"] if self.reduction.selector is not None and n_req else None
            counts.append(RequestCounts(text_rows=int(one.rows.shape[0]) - st["visual_rows"],
                                        visual_rows=st["visual_rows"],
                                        visual_positions=st["visual_positions"], vtu=self.reduction.vtu,
                                        encoder_counts=enc_counts, encoder_matched=enc_matched,
                                        projector_rows=sum(st["encoder_tokens"]), selected=selected))
            first += n_req
            built.append(one)
            masks.append((input_ids == self.image_token_id) | (input_ids == self.video_token_id))
            st["encoder_ms"] = enc_ms * n_req / max(1, n_pieces)
            st["image_bytes_per_pixel"] = jpeg_bytes_per_pixel(req.images)
            stats.append(st)
        return self.finish_batch(requests, built, masks, ids, stats, counts, memory, exact=not shares)

    def _merged_rows(self, enc: EncoderOutput) -> tuple[list[int], torch.Tensor]:
        """(offset of each crop/frame's merged rows, all merged rows through the projector)."""
        tokens, offsets, total = [], [], 0
        for i in range(enc.tokens.shape[0]):
            t, _ = enc.unique(i)
            t = t[self.cls:]  # the CLS (protected, always first) is dropped, as the "default" strategy does
            offsets.append(total)
            tokens.append(t)
            total += t.shape[0]
        projected = self.projector(torch.cat(tokens, 0))  # merged rows only
        return offsets, projected

    def _sequence(self, req: Request, input_ids: torch.Tensor, packs: list[dict], vids: list[torch.Tensor],
                  enc: EncoderOutput | None, offsets: list[int], merged: torch.Tensor | None, first: int, crops,
                  shares: bool) -> tuple[RequestRows, dict]:
        """The request's rows and maps (a row's position: its first use; -1 maps a dropped position),
        and its stats."""
        n = self.side * self.side
        media = self.media(packs, crops, vids)
        segments, start = [], first
        for segs, count in media:  # local ids -> merged rows of this request's crops/frames in the batch
            pieces = start + torch.arange(count).repeat_interleave(n)
            p2t = enc.patch_to_token[pieces.to(enc.patch_to_token.device),
                                     (self.cls + torch.arange(n)).repeat(count).to(enc.patch_to_token.device)]
            p2t = p2t.cpu() - self.cls  # token index among the patch rows (the CLS row is dropped)
            rows_of = torch.where(p2t >= 0, torch.as_tensor(offsets)[pieces] + p2t, DROPPED)
            segments += [seg.to_rows(rows_of) for seg in segs]
            start += count
        is_img = input_ids == self.image_token_id
        is_vid = input_ids == self.video_token_id
        vis_pos = torch.cat([is_img.nonzero()[:, 0], is_vid.nonzero()[:, 0]])
        keys = [seg.mixes() for seg in segments]
        n_vis = sum(k[0].shape[0] for k in keys)
        if vis_pos.numel() != n_vis:
            raise ConfigError(
                f"{req.name}: the processor expanded the prompt into {vis_pos.numel()} image/video tokens but the "
                f"vision side gives {n_vis} features; the processor's settings (num_image_tokens, grid pinpoints, "
                "vision_aspect_ratio) do not match the model config"
            )
        text_emb = self.embed(input_ids.to(self.device))
        if segments:
            values = torch.cat([seg.values(merged.to(self.dtype), self.image_newline.to(self.dtype))
                                for seg in segments])
            src, wt = stack_mixes(keys)
            live = wt.sum(1) > 0  # positions that kept a patch (random pruning drops the others)
            live_idx = live.nonzero()[:, 0]
            values = values[live_idx.to(values.device)]
            if shares:  # the distinct mixes; each row is its first position's value
                _, inv_live = torch.unique(torch.cat([src[live].double(), wt[live]], 1), dim=0, return_inverse=True)
                first_pos = torch.full((int(inv_live.max()) + 1,), n_vis, dtype=torch.long)
                first_pos.scatter_reduce_(0, inv_live, torch.arange(live_idx.numel()), reduce="amin")
                values = values[first_pos.to(values.device)]
            else:
                inv_live = torch.arange(live_idx.numel())
            inv = torch.full((n_vis,), -1, dtype=torch.long)
            inv[live_idx] = inv_live
        else:
            values, inv = text_emb[:0], torch.zeros(0, dtype=torch.long)
        n_d = values.shape[0]
        length = input_ids.numel()
        key = n_d + torch.arange(length)  # text positions: rows of their own
        key[vis_pos] = inv
        used = key >= 0
        # rows in order of first use along the sequence (the unmodified model's order when nothing merges)
        table = torch.cat([values, text_emb.to(values.dtype)], 0)
        first_use = torch.full((table.shape[0],), length, dtype=torch.long)
        first_use.scatter_reduce_(0, key[used], torch.arange(length)[used], reduce="amin")
        order = torch.argsort(first_use)[: int((first_use < length).sum())]
        rank = torch.empty(table.shape[0], dtype=torch.long)
        rank[order] = torch.arange(order.numel())
        flags = order < n_d
        n_enc = sum(c for _, c in media)
        stats = {
            "images": len(req.images), "crops": sum(c.shape[0] for c in crops),
            "frames": sum(v.shape[0] for v in vids),
            "distinct_frames": sum(v.distinct_frames or v.frames.shape[0] for v in req.videos),
            "encoder_tokens": [enc.num_tokens(first + i) for i in range(n_enc)],
            "visual_positions": int(vis_pos.numel()), "visual_rows": int(flags.sum()),
            "visual_tokens_before": int(vis_pos.numel()), "visual_tokens_after": int(flags.sum()),
        }
        mapping = torch.where(used, rank[key.clamp(min=0)], -1)
        rows = table[order.to(table.device)].to(self.device, self.dtype)
        return RequestRows(rows, mapping, flags, first_use[order], stats["visual_positions"]), stats


# ------------------------------------------------------------------------------------- the family
def load_pipeline(pretrained: str, device_map: str, dtype: str, attn_implementation: str | None,
                  family_args: dict) -> OnevisionPipeline:
    model, processor = load_onevision(pretrained, device_map, dtype, attn_implementation)
    pipe = OnevisionPipeline(model, processor)
    pipe.layout, pipe.multi_image = family_args["layout"], family_args["multi_image"]
    return pipe


def request_media(visuals, name: str, max_frames_num: int) -> tuple[list[Image.Image], list[Video]]:
    """Images (PIL, RGB) and videos (paths, sampled like llava_hf) of one doc."""
    images, videos = [], []
    for v in visuals or []:
        if isinstance(v, Image.Image):
            images.append(v.convert("RGB"))
        elif isinstance(v, str):
            videos.append(load_video(v, max_frames_num, name=name))
        else:
            raise ConfigError(f"{name}: unsupported visual {type(v).__name__} "
                              "(images and video file paths are supported)")
    return images, videos


def simple_request(pipe: OnevisionPipeline, context: str, visuals, name: str, continuation: str | None,
                   family_args: dict) -> tuple[Request, str | None]:
    images, videos = request_media(visuals, name, family_args["max_frames_num"])
    text, full = simple_prompt(pipe.tokenizer, context, len(images), len(videos), continuation)
    return Request(text, images, videos, name=name), full


def chat_request(pipe: OnevisionPipeline, messages, name: str, family_args: dict) -> Request:
    from .llava import chat_prompt

    images, videos, audios = messages.extract_media()
    if audios:
        raise ConfigError(f"{name}: audio inputs are not supported")
    images, videos = request_media(list(images) + list(videos), name, family_args["max_frames_num"])
    return Request(chat_prompt(pipe.processor, messages.model_dump()["messages"]), images, videos, name=name)


FAMILIES.register("llava_onevision", FamilySpec(
    model_types=("llava_onevision",),
    suffix="llava_onevision",
    default_checkpoint=ONEVISION_7B,
    module=__name__,
    encoder_call=ENCODER_CALL,
    args={
        "max_frames_num": Arg(MAX_FRAMES, parse.positive_int,
                              f"frames sampled uniformly per video, as lmms-eval's llava_hf (default {MAX_FRAMES})"),
        "layout": Arg(LAYOUTS[0], parse.choice(LAYOUTS),
                      "stock (the unmodified model's sequence, default) | official (the DyMU code's: crops "
                      "flattened, no unpadding, newlines or video pooling; its own rows in the tables)"),
        "multi_image": Arg(MULTI_IMAGE_MODES[0], parse.choice(MULTI_IMAGE_MODES),
                           "several images in a request: anyres (each its own AnyRes crops, as lmms-eval's "
                           "llava_hf; default) | single (one crop and one newline each, transformers' "
                           "multi-image mode)"),
    },
    title="LLaVA-OneVision",
))

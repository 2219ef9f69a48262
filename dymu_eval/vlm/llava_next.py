"""LLaVA-NeXT / LLaVA-1.6 (``LlavaNextForConditionalGeneration``: CLIP-L/336 + Vicuna or Mistral, AnyRes images).

Every NeXT quirk lives here (docs/llava-next.md). The tower is CLIP read at ``vision_feature_layer``
(-2) with the "default" strategy (CLS dropped); every crop of a batch goes through the reduced
encoder in one call, each crop merged on its own. The unmodified model's sequence per image
(``pack_image_features``) is the base crop (no newline after it), then the grid canvas of the other
crops unpadded to the image's aspect ratio with one ``image_newline`` per canvas row; no pooling and
no ``anyres_max`` downsample. A lone crop is that crop and one newline. The counts vary per image.

The rows are built here (never through HF's ``pack_image_features``, whose ``view`` needs 576
tokens per crop) with the AnyRes toolkit shared with OneVision: with reduction the map position ->
merged row keeps the exact layout (VTU), and every position is its own row with none.

VisionZip without VTU follows its official NeXT code (``visionzip/llava_arch.py``,
``restore_image_features_sorted``): per image the base crop's rows [CLS, dominant, contextual], then
the other crops' dominant patches in the raster order of the stitched canvas (not unpadded, no
newlines), then those crops' CLS rows, then their contextual rows.

Token budgets are recorded both ways: the papers' "crops x tokens per crop" (5 x 128 = 640 on the
7B checkpoints, whose largest grid is 2x2) and the real count of each image.

lmms-eval's ``llava_hf`` prompts a NeXT checkpoint (simple and chat path) exactly as LLaVA-1.5, so
the family's ``Request``, ``simple_request`` and ``chat_request`` are LLaVA-1.5's.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from ..accounting import RequestCounts
from ..errors import ConfigError, InputImageError
from ..methods import FAMILIES, FamilySpec
from ..vision import EncoderOutput
from ..vocabulary import NEXT_VICUNA_7B
from .anyres import GridPiece, count_positions
from .checkpoint import load_checkpoint
from .efficiency import image_counts
from .llava import IMAGE_TOKEN, Request, chat_request, jpeg_bytes_per_pixel, simple_prompt, simple_request
from .llava_onevision import OnevisionPipeline
from .pipeline import PipelineBase, Prepared, RequestRows
from .reduction import BuildContext, Reduction

_log = logging.getLogger(__name__)

# HF's NeXT encodes all crops of a batch in one tower call, so DToMe follows the batch path.
ENCODER_CALL = "batched"
__all__ = ["ENCODER_CALL", "NextPipeline", "Request", "chat_request", "load_next", "load_pipeline", "simple_prompt",
           "simple_request"]


# ------------------------------------------------------------------------------------- loading
def load_next(pretrained: str, device_map: str, dtype: str = "auto", attn_implementation: str | None = None):
    """(model, processor) of a LLaVA-NeXT checkpoint; ConfigError for other architectures."""
    from transformers import LlavaNextForConditionalGeneration

    return load_checkpoint(pretrained, LlavaNextForConditionalGeneration, "llava_next", "dymu_llava_next",
                           f"LLaVA-1.6, e.g. {NEXT_VICUNA_7B} or llava-hf/llava-v1.6-mistral-7b-hf", device_map,
                           dtype, attn_implementation)


def check_processor(config, processor, name: str) -> None:
    """ConfigError (one line) when the processor would expand ``<image>`` for other crops than the model packs."""
    image_processor = processor.image_processor
    vision = config.vision_config
    crop = getattr(image_processor, "crop_size", None)
    crop = crop.get("height") if isinstance(crop, dict) else getattr(crop, "height", None)
    checks = (
        ("image_grid_pinpoints", [list(p) for p in image_processor.image_grid_pinpoints],
         [list(p) for p in config.image_grid_pinpoints]),
        ("patch_size", processor.patch_size, vision.patch_size),
        ("crop size", crop, vision.image_size),
        ("vision_feature_select_strategy", processor.vision_feature_select_strategy,
         config.vision_feature_select_strategy),
        ("num_additional_image_tokens (the CLS)", processor.num_additional_image_tokens, 1),
    )
    for what, given, wanted in checks:
        if given != wanted:
            raise ConfigError(f"{name}: the processor's {what} is {given} but the model config needs {wanted}; "
                              "the processor does not belong to this LLaVA-NeXT checkpoint")


def paper_crops(pinpoints: Sequence[Sequence[int]], crop_size: int) -> int:
    """The crop count the papers multiply by: the base crop plus the largest grid (5 on the 7B checkpoints)."""
    return 1 + max((h // crop_size) * (w // crop_size) for h, w in pinpoints)


# ------------------------------------------------------------------------------------- pipeline
class NextPipeline(OnevisionPipeline):
    """Runs batches of requests through a LLaVA-NeXT model with a given reduction. It shares the
    AnyRes row building with OneVision (base crop, unpadded canvas, newlines as ``GridPiece`` maps)
    and overrides what NeXT does differently: no downsample, no video, a CLS to drop, VisionZip's
    own sequence. The crops of each image are OneVision's ``_crops`` (transformers' OneVision grid
    functions are copies of NeXT's; without ``batch_num_images`` every image gets its AnyRes crops)."""

    ENCODER_CALL = ENCODER_CALL

    def __init__(self, model, processor, reduction: Reduction | None = None):
        cfg = model.config
        name = getattr(model, "name_or_path", "") or type(model).__name__
        if getattr(cfg, "model_type", None) != "llava_next":
            raise ConfigError(f"{name} is a {getattr(cfg, 'model_type', '?')} model, not LLaVA-NeXT")
        if cfg.vision_feature_select_strategy != "default":
            raise ConfigError(f"{name}: vision_feature_select_strategy={cfg.vision_feature_select_strategy!r} is "
                              "not supported (LLaVA-NeXT drops the CLS: 'default')")
        check_processor(cfg, processor, name)
        self.image_token_id = int(cfg.image_token_id)
        self.video_token_id = -1  # no token id: NeXT has no video placeholder
        self.grid_pinpoints = [list(p) for p in cfg.image_grid_pinpoints]
        self.crop_size = cfg.vision_config.image_size
        self.side = cfg.vision_config.image_size // cfg.vision_config.patch_size  # 24 at 336 px / 14
        PipelineBase.__init__(self, model, processor, reduction)
        if not self.runner.has_cls:
            raise ConfigError(f"{name}: the vision tower has no CLS token for the 'default' strategy to drop")
        self.cls = 1
        self.image_newline = model.model.image_newline
        self.multi_image = "anyres"  # lmms-eval's llava_hf: every image its own AnyRes crops
        self.layout = "stock"
        self.paper_crops = paper_crops(self.grid_pinpoints, self.crop_size)

    # -- the reduction (a NeXT checkpoint's DyMU thresholds are its own) ----------------------
    @property
    def reduction(self) -> Reduction:
        return self._reduction

    @reduction.setter
    def reduction(self, value: Reduction) -> None:
        self._reduction = value
        key = getattr(value, "thresholds_key", None)
        own = _slug(getattr(self.model, "name_or_path", "") or "")
        if key and own and not key.startswith(own + "__"):
            _log.warning("dymu-eval: thresholds %s were not calibrated on %s; LLaVA-NeXT fine-tuned its CLIP, so "
                         "thresholds of another checkpoint (e.g. LLaVA-1.5's) do not transfer: run dymu-eval "
                         "calibrate --encoder %s", key, self.model.name_or_path, self.model.name_or_path)

    def build_context(self) -> BuildContext:
        """Threshold lookups go by this checkpoint's name only: NeXT's CLIP is fine-tuned, so entries
        filed under the CLIP architecture (LLaVA-1.5's OpenAI weights) must not match it."""
        context = super().build_context()
        context.names = [n for n in context.names[:1] if n]
        return context

    # -- processor --------------------------------------------------------------------------
    def _process(self, req: Request, text: str | None = None) -> tuple[torch.Tensor, dict]:
        """(input_ids (L,), the processor's outputs) as the unmodified model gets them."""
        text = req.prompt if text is None else text
        if text.count(IMAGE_TOKEN) != len(req.images):
            raise ConfigError(f"{req.name}: the prompt has {text.count(IMAGE_TOKEN)} {IMAGE_TOKEN} placeholder(s) but "
                              f"{len(req.images)} image(s) were given; each image needs exactly one placeholder")
        try:
            out = self.processor(images=list(req.images) or None, text=text, return_tensors="pt")
        except (OSError, ValueError, TypeError) as exc:
            error = InputImageError if req.images else ConfigError
            raise error(f"{req.name}: the LLaVA-NeXT processor rejected the input ({exc})") from exc
        return out["input_ids"][0], out

    # -- the stock layout ------------------------------------------------------------------
    def canvas(self, grid: tuple[int, int]) -> torch.Tensor:
        """Local ids (crop c >= 1, patch p -> c*N + p) of the stitched grid crops, (nph*s, npw*s), not unpadded."""
        s, n = self.side, self.side * self.side
        nph, npw = grid
        return (n + torch.arange(nph * npw * n)).view(nph, npw, s, s).permute(0, 2, 1, 3).reshape(nph * s, npw * s)

    def image_segments(self, pack: dict) -> list[GridPiece]:
        """One image as ``pack_image_features`` lays it out: the base crop (no newline after it), then
        the canvas unpadded to the image's aspect ratio with one newline per row; a lone crop and one newline."""
        from transformers.models.llava_next.modeling_llava_next import unpad_image

        s = self.side
        base = GridPiece(torch.arange(s * s).view(s, s))
        if not pack["anyres"]:
            return [base, GridPiece(None)]
        canvas = unpad_image(self.canvas(pack["grid"])[None], pack["size"])[0]
        return [base, GridPiece(canvas, None, row_newlines=True)]

    def media(self, packs: list[dict], crops: list[torch.Tensor], vids: list[torch.Tensor]):
        """Per image: (its segments in the stock layout, its crop count)."""
        return [(self.image_segments(p), c.shape[0]) for p, c in zip(packs, crops)]

    # -- vision -----------------------------------------------------------------------------
    def _official_visionzip(self) -> bool:
        """VisionZip without VTU: its own NeXT sequence (the selection keeps each crop's CLS row)."""
        sel = self.reduction.selector
        return sel is not None and bool(sel.cls_row) and not self.reduction.vtu

    def _projected_rows(self, enc: EncoderOutput, keep_cls: bool) -> tuple[list[int], torch.Tensor]:
        """(offset of each crop's first patch row, the crops' rows through the projector). The CLS
        row of crop i (row 0 of its tokens, always first) is projected only when ``keep_cls``, at
        offset - 1."""
        tokens, offsets, total = [], [], 0
        drop = 0 if keep_cls else self.cls
        for i in range(enc.tokens.shape[0]):
            t, _ = enc.unique(i)
            t = t[drop:]
            offsets.append(total + self.cls - drop)
            tokens.append(t)
            total += t.shape[0]
        return offsets, self.projector(torch.cat(tokens, 0))

    # -- batch preparation ------------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, requests: Sequence[Request]) -> Prepared:
        """Tokenize, encode and project; build unique rows and the virtual layout per request."""
        memory = self.accounting.start_batch()
        ids, items, pieces = [], [], []
        for req in requests:
            input_ids, out = self._process(req)
            ids.append(input_ids)
            crops, packs = self._crops(out)
            items.append((crops, packs))
            pieces += crops
        official = self._official_visionzip()
        enc, enc_ms, offsets, merged = None, 0.0, [], None
        if pieces:
            enc, enc_ms = self.encode(torch.cat(pieces, 0))
            offsets, merged = self._projected_rows(enc, keep_cls=official)
        shares = self.shares_rows(enc)
        n_pieces = sum(p.shape[0] for p in pieces)
        built, masks, stats, counts = [], [], [], []
        first = 0  # this request's first crop in the encoder batch
        for req, input_ids, (crops, packs) in zip(requests, ids, items):
            n_req = sum(c.shape[0] for c in crops)
            if official and crops:
                one, st = self._visionzip_sequence(req, input_ids, packs, crops, enc, offsets, merged, first)
            else:
                one, st = self._sequence(req, input_ids, packs, [], enc, offsets, merged, first, crops, shares)
            st.update(self._budget_stats(one, st, packs, crops, input_ids, official))
            enc_counts, enc_matched = image_counts(enc, self.reduction.policy, first, n_req)
            counts.append(RequestCounts(
                text_rows=int(one.rows.shape[0]) - st["visual_rows"], visual_rows=st["visual_rows"],
                visual_positions=st["visual_positions"], vtu=self.reduction.vtu, encoder_counts=enc_counts,
                encoder_matched=enc_matched, projector_rows=sum(st["crop_tokens"]),
                selected=st["encoder_tokens"] if self.reduction.selector is not None and n_req else None))
            first += n_req
            built.append(one)
            masks.append(input_ids == self.image_token_id)
            st["encoder_ms"] = enc_ms * n_req / max(1, n_pieces)
            st["image_bytes_per_pixel"] = jpeg_bytes_per_pixel(req.images)
            stats.append(st)
        return self.finish_batch(requests, built, masks, ids, stats, counts, memory,
                                 exact=not shares and not official)

    def _budget_stats(self, one: RequestRows, st: dict, packs: list[dict], crops: list[torch.Tensor],
                      input_ids: torch.Tensor, official: bool) -> dict:
        """Per crop the rows it hands the projector, per image its positions and LLM rows, and the
        papers' budget (``paper_crops`` x tokens per crop)."""
        crop_tokens = [t - (0 if official else self.cls) for t in st["encoder_tokens"]]
        positions = [count_positions(self.image_segments(p)) for p in packs]
        if official:
            image_rows = st.pop("_image_rows")
        else:  # the distinct rows of each image's run of positions
            vis = one.mapping[input_ids == self.image_token_id]
            bounds = torch.tensor([0] + positions).cumsum(0).tolist()
            image_rows = [int(torch.unique(m[m >= 0]).numel()) for m in
                          (vis[a:b] for a, b in zip(bounds[:-1], bounds[1:]))]
        per_crop = sum(crop_tokens) / len(crop_tokens) if crop_tokens else 0.0
        return {"crop_tokens": crop_tokens, "crops_per_image": [c.shape[0] for c in crops],
                "image_positions": positions, "image_rows": image_rows, "paper_crops": self.paper_crops,
                "paper_tokens_per_crop": per_crop, "paper_visual_tokens": self.paper_crops * per_crop}

    def _visionzip_sequence(self, req: Request, input_ids: torch.Tensor, packs: list[dict], crops, enc: EncoderOutput,
                            offsets: list[int], merged: torch.Tensor, first: int) -> tuple[RequestRows, dict]:
        """VisionZip's own NeXT sequence (module docstring): the rows at consecutive positions, each
        image's rows where its placeholder run was. A row's recorded position is its image's first."""
        dominant = int(self.reduction.selector.dominant)  # rows 0..dominant-1 of a crop: its CLS, then its kept patches
        n = self.side * self.side
        image_rows, start = [], first
        for pack, c in zip(packs, crops):
            count = c.shape[0]
            heads = [offsets[start + k] - self.cls for k in range(count)]  # each crop's CLS row
            ends = [h + enc.num_tokens(start + k) for k, h in enumerate(heads)]
            rows = list(range(heads[0], ends[0]))  # the base crop: CLS, dominant, contextual
            if count == 1:
                rows.append(-1)  # the newline
            else:
                ids = self.canvas(pack["grid"]).flatten()
                crop, patch = ids // n, ids % n
                p2t = enc.patch_to_token[(start + crop).to(enc.patch_to_token.device),
                                         (self.cls + patch).to(enc.patch_to_token.device)].cpu()
                kept = (p2t >= 1) & (p2t < dominant)
                picked = torch.as_tensor(heads)[crop[kept]] + p2t[kept]
                rows += picked.tolist() + heads[1:]
                rows += [r for h, e in zip(heads[1:], ends[1:]) for r in range(h + dominant, e)]
            image_rows.append(rows)
            start += count
        newline = self.image_newline.to(self.dtype)[None]
        text_emb = self.embed(input_ids.to(self.device))
        is_img = (input_ids == self.image_token_id).tolist()
        stock = [count_positions(self.image_segments(p)) for p in packs]
        parts, flags, row_pos, pos, img = [], [], [], 0, 0
        while pos < len(is_img):
            if is_img[pos]:
                idx = torch.tensor(image_rows[img])
                values = merged[idx.clamp(min=0).to(merged.device)].to(self.dtype)
                values = torch.where((idx < 0).to(values.device)[:, None], newline, values)
                parts.append(values)
                flags.append(torch.ones(idx.numel(), dtype=torch.bool))
                row_pos.append(torch.full((idx.numel(),), pos, dtype=torch.long))
                pos += stock[img]
                img += 1
            else:
                end = pos
                while end < len(is_img) and not is_img[end]:
                    end += 1
                parts.append(text_emb[pos:end].to(self.dtype))
                flags.append(torch.zeros(end - pos, dtype=torch.bool))
                row_pos.append(torch.arange(pos, end))
                pos = end
        visual = torch.cat(flags)
        positions = int(sum(is_img))
        if positions != sum(stock):
            raise ConfigError(f"{req.name}: the processor expanded the prompt into {positions} image tokens but the "
                              f"model packs {sum(stock)}; the processor's settings do not match the model config")
        rows = torch.cat(parts).to(self.device, self.dtype)
        mapping = torch.full((input_ids.numel(),), -1, dtype=torch.long)  # no row stands for one position here
        mapping[~torch.as_tensor(is_img)] = (~visual).nonzero()[:, 0]
        stats = {"images": len(req.images), "crops": sum(c.shape[0] for c in crops), "frames": 0,
                 "distinct_frames": 0, "encoder_tokens": [enc.num_tokens(first + i) for i in range(start - first)],
                 "visual_positions": positions, "visual_rows": int(visual.sum()),
                 "visual_tokens_before": positions, "visual_tokens_after": int(visual.sum()),
                 "_image_rows": [len(r) for r in image_rows]}
        return RequestRows(rows, mapping, visual, torch.cat(row_pos), positions), stats


def _slug(name: str) -> str:
    from ..thresholds import slug

    return slug(name) if name else ""


# ------------------------------------------------------------------------------------- the family
def load_pipeline(pretrained: str, device_map: str, dtype: str, attn_implementation: str | None,
                  family_args: dict) -> NextPipeline:
    model, processor = load_next(pretrained, device_map, dtype, attn_implementation)
    return NextPipeline(model, processor)


FAMILIES.register("llava_next", FamilySpec(
    model_types=("llava_next",),
    suffix="llava_next",
    default_checkpoint=NEXT_VICUNA_7B,
    module=__name__,
    encoder_call=ENCODER_CALL,
    title="LLaVA-NeXT",
))

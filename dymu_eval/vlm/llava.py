"""LLaVA-1.5 (``LlavaForConditionalGeneration``): prompt + pixels -> reduced encoder -> projector
on unique rows -> the virtual layout of the unmodified sequence -> the language loop.

Every LLaVA quirk lives here: the ``<image>`` placeholder the processor expands into one
token per patch, the vision feature layer and select strategy ("default" drops CLS), the
Vicuna-style prompt that lmms-eval's ``llava_hf`` builds. With no reduction the pipeline
reproduces the unmodified model token for token (same logits in fp32).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch
from PIL import Image

from ..accounting import RequestCounts
from ..errors import ConfigError, InputImageError
from ..methods import FAMILIES, FamilySpec
from ..vision import EncoderOutput
from ..vocabulary import LLAVA_15
from .checkpoint import load_checkpoint
from .efficiency import image_counts
from .pipeline import PipelineBase, Prepared, RequestRows
from .reduction import Reduction

IMAGE_TOKEN = "<image>"
# The reference LLaVA-1.5 encodes one image per call, so DToMe follows the reference's instance
# path for every image, whatever batch it runs in here (merge.Threshold ``call``).
ENCODER_CALL = "per_image"
# lmms-eval's llava_hf falls back to this template when the tokenizer has none (LLaVA-1.5 / Vicuna v1).
VICUNA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.index0 == 0 %}A chat between a curious user and an artificial "
    "intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions. "
    "USER: {{ message['content'] }} {% elif message['role'] == 'user' %}USER: {{ message['content'] }} "
    "{% else %} ASSISTANT: {{ message['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


@dataclass
class Request:
    """One prompt (already templated, with one ``<image>`` per image) and its images."""

    prompt: str
    images: list[Image.Image]
    name: str = "request"  # used in error messages (task/doc id)
    videos: ClassVar[tuple] = ()  # images only (LLaVA-NeXT, which takes these requests, shares OneVision's rows)


def jpeg_bytes_per_pixel(images: Sequence[Image.Image], quality: int = 90) -> float | None:
    """The paper's image-complexity measure: JPEG (q=90) size in bytes per pixel, over all images."""
    if not images:
        return None
    total, pixels = 0, 0
    for img in images:
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="JPEG", quality=quality)
        total += buf.tell()
        pixels += img.size[0] * img.size[1]
    return total / pixels


# ------------------------------------------------------------------------------------- loading
def load_llava(pretrained: str, device_map: str, dtype: str = "auto", attn_implementation: str | None = None):
    """(model, processor) of a LLaVA-1.5 checkpoint; ConfigError for other architectures."""
    from transformers import LlavaForConditionalGeneration

    return load_checkpoint(pretrained, LlavaForConditionalGeneration, "llava", "dymu_llava",
                           "LLaVA-1.5, e.g. llava-hf/llava-1.5-7b-hf", device_map, dtype, attn_implementation)


# ------------------------------------------------------------------------------------- prompts
def simple_prompt(tokenizer, context: str, n_images: int, continuation: str | None = None) -> tuple[str, str | None]:
    """What lmms-eval's simple ``llava_hf`` feeds the model: ``<image>`` x n, a newline, the
    context, through the tokenizer's chat template (Vicuna when it has none). With a
    continuation, also the prompt followed by it (for loglikelihood)."""
    if IMAGE_TOKEN not in context and n_images:
        context = " ".join([IMAGE_TOKEN] * n_images) + "\n" + context
    template = tokenizer.chat_template or VICUNA_CHAT_TEMPLATE
    user = [{"role": "user", "content": context}]
    prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True, chat_template=template)
    if continuation is None:
        return prompt, None
    full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": continuation}], tokenize=False,
                                         add_generation_prompt=False, chat_template=template)
    return prompt, full


def chat_prompt(processor, messages: list[dict]) -> str:
    """What lmms-eval's chat ``llava_hf`` feeds the model: the processor's chat template."""
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


# ------------------------------------------------------------------------------------- pipeline
class LlavaPipeline(PipelineBase):
    """Runs batches of requests through a LLaVA-1.5 model with a given reduction."""

    ENCODER_CALL = ENCODER_CALL

    def __init__(self, model, processor, reduction: Reduction | None = None):
        cfg = model.config
        self.image_token_id = int(cfg.image_token_id if getattr(cfg, "image_token_id", None) is not None
                                  else cfg.image_token_index)
        self.select = getattr(cfg, "vision_feature_select_strategy", "default")
        if self.select not in ("default", "full"):
            raise ConfigError(f"vision_feature_select_strategy={self.select!r} is not supported (default or full)")
        super().__init__(model, processor, reduction)  # the tower reads vision_feature_layer (ConfigError for lists)

    # -- processor --------------------------------------------------------------------------
    def _process(self, req: Request, text: str | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(input_ids (L,), pixel_values (n, 3, H, W) or None) as the unmodified model gets them."""
        text = req.prompt if text is None else text
        n_placeholders = text.count(IMAGE_TOKEN)
        if n_placeholders != len(req.images):
            raise ConfigError(
                f"{req.name}: the prompt has {n_placeholders} {IMAGE_TOKEN} placeholder(s) but {len(req.images)} "
                "image(s) were given; each image needs exactly one placeholder"
            )
        try:
            out = self.processor(images=req.images or None, text=text, return_tensors="pt")
        except (OSError, ValueError) as exc:
            error = InputImageError if req.images else ConfigError
            raise error(f"{req.name}: the LLaVA processor rejected the input ({exc})") from exc
        return out["input_ids"][0], out.get("pixel_values")

    # -- vision -----------------------------------------------------------------------------
    def _image_rows(self, enc: EncoderOutput, i: int, n_tokens: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(unique visual rows (U, D) before the projector, map (n_tokens,) image token -> row, -1
        for a token the reduction dropped)."""
        tokens, p2t = enc.unique(i)
        drops_cls = self.select == "default" and enc.has_cls
        seq = p2t[1:] if drops_cls else p2t
        if seq.numel() != n_tokens:
            raise ConfigError(
                f"{name}: the processor expanded image {i} into {n_tokens} tokens but the vision tower gives "
                f"{seq.numel()} features (select strategy {self.select}); the processor's patch_size / "
                "vision_feature_select_strategy do not match the model config"
            )
        kept = seq >= 0
        used, inverse = torch.unique(seq[kept], sorted=True, return_inverse=True)
        remap = torch.full_like(seq, -1)
        remap[kept] = inverse
        if enc.cls_row and drops_cls and not self.reduction.vtu:
            # VisionZip feeds the CLS row as its first dominant token, although LLaVA drops CLS. It
            # holds no position of the unmodified sequence, so with VTU (a row per position) it is left out.
            used = torch.cat([p2t[:1], used])
            remap = torch.where(kept, remap + 1, remap)
        return tokens[used], remap

    # -- batch preparation ------------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, requests: Sequence[Request]) -> Prepared:
        """Tokenize, encode and project; build unique rows and the virtual layout per request."""
        memory = self.accounting.start_batch()
        ids, pix, n_imgs = [], [], []
        for req in requests:
            input_ids, pv = self._process(req)
            ids.append(input_ids)
            n_imgs.append(0 if pv is None else pv.shape[0])
            if pv is not None:
                pix.append(pv)
        enc, enc_ms = (None, 0.0)
        if pix:
            enc, enc_ms = self.encode(torch.cat(pix, 0))
        built, stats, counts = [], [], []
        img = 0
        for req, input_ids, n_img in zip(requests, ids, n_imgs):
            enc_counts, enc_matched = image_counts(enc, self.reduction.policy, img, n_img)
            selected = ([enc.num_tokens(i) for i in range(img, img + n_img)]  # rows a selection kept per image
                        if self.reduction.selector is not None and n_img else None)
            one, img = self._sequence(req, input_ids, enc, img)
            counts.append(RequestCounts(text_rows=int(one.rows.shape[0]) - one.visual_rows,
                                        visual_rows=one.visual_rows, visual_positions=one.visual_positions,
                                        vtu=self.reduction.vtu, encoder_counts=enc_counts,
                                        encoder_matched=enc_matched, selected=selected))
            built.append(one)
            stats.append({
                "visual_tokens_before": one.visual_positions,
                "visual_tokens_after": one.visual_rows,
                "encoder_ms": enc_ms * n_img / max(1, sum(n_imgs)),
                "image_bytes_per_pixel": jpeg_bytes_per_pixel(req.images),
            })
        masks = [input_ids == self.image_token_id for input_ids in ids]
        return self.finish_batch(requests, built, masks, ids, stats, counts, memory)

    def _sequence(self, req: Request, input_ids: torch.Tensor, enc: EncoderOutput | None,
                  img: int) -> tuple[RequestRows, int]:
        """The request's rows and maps, and the index of the next image in the encoder batch."""
        is_img = input_ids == self.image_token_id
        spans = iter(_image_spans(is_img, len(req.images), req.name))
        text_emb = self.embed(input_ids.to(self.device))
        parts, mapping, flags, row_pos, cursor, pos, before = [], [], [], [], 0, 0, 0
        n = input_ids.numel()
        while pos < n:
            if is_img[pos]:
                length = next(spans)
                feats, remap = self._image_rows(enc, img, length, req.name)
                remap = remap.cpu()
                img += 1
                parts.append(self.projector(feats).to(self.device, self.dtype))  # unique rows only
                mapping.append(torch.where(remap >= 0, remap + cursor, remap))
                flags.append(torch.ones(feats.shape[0], dtype=torch.bool))
                kept = remap >= 0  # a row's position: its first patch's (a row without patches: the span start)
                first = torch.full((feats.shape[0],), pos, dtype=torch.long)
                row_pos.append(first.scatter_reduce(0, remap[kept], pos + kept.nonzero()[:, 0], "amin",
                                                    include_self=False))
                cursor += feats.shape[0]
                before += length
                pos += length
            else:
                end = pos
                while end < n and not is_img[end]:
                    end += 1
                parts.append(text_emb[pos:end])
                mapping.append(torch.arange(cursor, cursor + end - pos))
                flags.append(torch.zeros(end - pos, dtype=torch.bool))
                row_pos.append(torch.arange(pos, end))
                cursor += end - pos
                pos = end
        return RequestRows(torch.cat(parts, 0), torch.cat(mapping), torch.cat(flags), torch.cat(row_pos), before), img


def _image_spans(is_img: torch.Tensor, n_images: int, name: str) -> list[int]:
    """Lengths of the runs of image tokens; one run per image (LLaVA-1.5 has no separators)."""
    flags = is_img.tolist()
    spans, run = [], 0
    for f in flags + [False]:
        if f:
            run += 1
        elif run:
            spans.append(run)
            run = 0
    if len(spans) != n_images:
        if n_images and len(spans) == 1 and spans[0] % n_images == 0:
            return [spans[0] // n_images] * n_images  # adjacent placeholders form one run
        raise ConfigError(f"{name}: found {len(spans)} image-token runs for {n_images} image(s) "
                          "in the tokenized prompt")
    return spans


# ------------------------------------------------------------------------------------- the family
def load_pipeline(pretrained: str, device_map: str, dtype: str, attn_implementation: str | None,
                  family_args: dict) -> LlavaPipeline:
    model, processor = load_llava(pretrained, device_map, dtype, attn_implementation)
    return LlavaPipeline(model, processor)


def request_images(visuals, name: str) -> list[Image.Image]:
    """The images of one doc (RGB); anything else is refused, naming the doc."""
    out = []
    for v in visuals or []:
        if not isinstance(v, Image.Image):
            raise ConfigError(f"{name}: only images are supported, got {type(v).__name__} "
                              "(video and audio inputs are not)")
        out.append(v.convert("RGB"))
    return out


def simple_request(pipe: LlavaPipeline, context: str, visuals, name: str, continuation: str | None,
                   family_args: dict) -> tuple[Request, str | None]:
    """lmms-eval's simple path: one doc as a request (and the full text with ``continuation``)."""
    images = request_images(visuals, name)
    text, full = simple_prompt(pipe.tokenizer, context, len(images), continuation)
    return Request(text, images, name=name), full


def chat_request(pipe: LlavaPipeline, messages, name: str, family_args: dict) -> Request:
    """lmms-eval's chat path: the processor's chat template over the doc's messages (images only)."""
    images, videos, audios = messages.extract_media()
    if videos or audios:
        raise ConfigError(f"{name}: video and audio inputs are not supported")
    return Request(chat_prompt(pipe.processor, messages.model_dump()["messages"]), request_images(images, name),
                   name=name)


FAMILIES.register("llava", FamilySpec(
    model_types=("llava",),
    suffix="llava",
    default_checkpoint=LLAVA_15,
    module=__name__,
    encoder_call=ENCODER_CALL,
    title="LLaVA-1.5",
))

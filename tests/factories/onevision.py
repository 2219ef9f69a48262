"""A tiny random LLaVA-OneVision (SigLIP tower + Qwen2 LM + WordLevel tokenizer) saved to a folder.

Built from configs and saved with ``save_pretrained`` so the real loading code of the plugin
and of lmms-eval's ``llava_hf`` runs on it. Crops are 48 px with 8 px patches (6x6 = 36 tokens
per crop, pooled to 3x3 for video). The grid pinpoints go up to 3x3 crops and the config reads
``anyres_max_4``, so a large square image triggers the bilinear downsample of the AnyRes canvas.
``tower="dinov2"`` puts a tower with a CLS token in (read at layer -2, the CLS dropped by the
"default" strategy), as the offline micro OneVision has.
"""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    Dinov2Config,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessor,
    LlavaOnevisionProcessor,
    LlavaOnevisionVideoProcessor,
    PreTrainedTokenizerFast,
    Qwen2Config,
    SiglipVisionConfig,
)

from tests.factories.tokenizer import word_tokenizer

CROP, PATCH = 48, 8
PINPOINTS = [[CROP * a, CROP * b] for a in (1, 2, 3) for b in (1, 2, 3)]
ASPECT = "anyres_max_4"
# content as a string (simple models) or as a list of {"type": "image"|"video"|"text"} parts (chat models)
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% elif c['type'] == 'video' %}<video>\n"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %} {% else %}ASSISTANT: {% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{{ c['text'] }}{% endfor %}{% endif %}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "<video>"]


def build_tokenizer(tasks_dir: Path) -> PreTrainedTokenizerFast:
    return word_tokenizer(tasks_dir, SPECIALS, CHAT_TEMPLATE,
                          extra_words={"what", "happens", "in", "the", "video", "describe", "it"})


def _tower(tower: str, layers: int):
    """(vision config, feature layer, select strategy, CLS rows per crop) of a ``tower`` of ``layers`` blocks."""
    shape = {"hidden_size": 32, "num_hidden_layers": layers, "num_attention_heads": 2, "image_size": CROP,
             "patch_size": PATCH}
    if tower == "dinov2":  # CLS + patches, read at layer -2; "default" drops the CLS
        return Dinov2Config(**shape, mlp_ratio=2), -2, "default", 1
    return SiglipVisionConfig(**shape, intermediate_size=64, vision_use_head=False), -1, "full", 0


def build_tiny_onevision(out: Path, tasks_dir: Path, *, vision_layers: int = 3, seed: int = 0,
                         tower: str = "siglip") -> Path:
    """Save a random tiny LLaVA-OneVision (model, processor, tokenizer) into ``out`` and return it."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(tasks_dir)
    vision, layer, strategy, cls = _tower(tower, vision_layers)
    text = Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=4096,
                       bos_token_id=1, eos_token_id=2, pad_token_id=3, tie_word_embeddings=False,
                       initializer_range=0.3, use_sliding_window=False)
    config = LlavaOnevisionConfig(
        vision_config=vision, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"), vision_feature_layer=layer,
        vision_feature_select_strategy=strategy, vision_aspect_ratio=ASPECT, image_grid_pinpoints=PINPOINTS,
        initializer_range=0.3, tie_word_embeddings=False,
    )
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    with torch.no_grad():  # wide random weights, so that greedy answers differ from sample to sample
        for name, p in model.named_parameters():
            if "vision_tower" in name and p.dim() == 2:
                p.normal_(0, 0.1)
        model.model.image_newline.normal_(0, 1.0)
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 3
    model.save_pretrained(out)
    image_processor = LlavaOnevisionImageProcessor(size={"height": CROP, "width": CROP},
                                                   image_grid_pinpoints=PINPOINTS)
    video_processor = LlavaOnevisionVideoProcessor(size={"height": CROP, "width": CROP})
    processor = LlavaOnevisionProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
        num_image_tokens=(CROP // PATCH) ** 2 + cls, vision_feature_select_strategy=strategy,
        chat_template=CHAT_TEMPLATE,
        vision_aspect_ratio=ASPECT,
    )
    processor.save_pretrained(out)
    return out


QUESTION = "what is the color of the object ? answer using a single word ."


def onevision_pipeline(folder: Path, dtype: str = "float64"):
    """The family pipeline over a saved tiny OneVision, on CPU, in ``dtype`` (float64 by default: the
    tests prove identities with the unmodified model there, at float64's rounding bound)."""
    from dymu_eval.vlm import llava_onevision as ov

    model, processor = ov.load_onevision(str(folder), "cpu", dtype)
    return ov.OnevisionPipeline(model, processor)


def onevision_request(pipe, images=(), videos=(), name: str = "sample", question: str = QUESTION):
    """A simple-path request (lmms-eval's ``llava_hf`` prompt) with these images and videos."""
    from dymu_eval.vlm import llava_onevision as ov

    text, _ = ov.simple_prompt(pipe.tokenizer, question, len(images), len(videos))
    return ov.Request(text, list(images), list(videos), name=name)

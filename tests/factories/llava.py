"""A tiny random LLaVA-1.5 (CLIP tower + Llama LM + WordLevel tokenizer) saved to a folder.

It is built from configs and saved with ``save_pretrained`` so the real loading code of
both the plugin and lmms-eval's ``llava_hf`` runs on it. The vocabulary is the words of the
offline tasks, so prompts tokenize without many unknowns.
"""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from tests.factories.tokenizer import word_tokenizer

# One template for both call styles: content as a string (simple models) or as a list of
# {"type": "image"|"text"} parts (chat models, processor.apply_chat_template).
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %} {% else %}ASSISTANT: {% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{{ c['text'] }}{% endfor %}{% endif %}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]


def build_tokenizer(tasks_dir: Path) -> PreTrainedTokenizerFast:
    return word_tokenizer(tasks_dir, SPECIALS, CHAT_TEMPLATE)


def build_tiny_llava(out: Path, tasks_dir: Path, *, image_size: int = 64, patch: int = 8,
                     vision_layers: int = 4, select: str = "default", feature_layer: int = -2,
                     seed: int = 0) -> Path:
    """Save a random tiny LLaVA (model, processor, tokenizer) into ``out`` and return it."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(tasks_dir)
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=vision_layers,
                              num_attention_heads=2, image_size=image_size, patch_size=patch, projection_dim=32,
                              initializer_range=0.3)
    text = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=4096,
                       bos_token_id=1, eos_token_id=2, pad_token_id=3, tie_word_embeddings=False,
                       initializer_range=0.3)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=image_token_id,
                         vision_feature_layer=feature_layer, vision_feature_select_strategy=select,
                         projector_hidden_act="gelu", initializer_range=0.3)
    # wide random weights (std 0.3) make greedy answers differ from sample to sample instead of
    # repeating one token, so equality checks against the unmodified model mean something
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 3
    model.save_pretrained(out)
    image_processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                         crop_size={"height": image_size, "width": image_size})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch,
                               vision_feature_select_strategy=select, chat_template=CHAT_TEMPLATE,
                               num_additional_image_tokens=1)
    processor.save_pretrained(out)
    return out


if __name__ == "__main__":  # manual use: python -m tests.factories.llava OUT_DIR
    import sys

    from tests.factories.paths import TASKS

    print(build_tiny_llava(Path(sys.argv[1]), TASKS))

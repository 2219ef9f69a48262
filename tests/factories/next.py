"""A tiny random LLaVA-NeXT (CLIP tower + Llama or Mistral LM + WordLevel tokenizer) saved to a folder.

Built from configs and saved with ``save_pretrained`` so the real loading code of the plugin and of
lmms-eval's ``llava_hf`` runs on it. Crops are 32 px with 8 px patches (4x4 = 16 tokens per crop,
CLS dropped by the "default" strategy, read at layer -2); the grid pinpoints are the 7B checkpoints'
five scaled by 32/336, so the 1x2, 2x1, 2x2, 3x1 and 1x3 grids all occur.
"""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessor,
    LlavaNextProcessor,
    MistralConfig,
)

from tests.factories.llava import CHAT_TEMPLATE, build_tokenizer

CROP, PATCH = 32, 8
SIDE = CROP // PATCH  # patches per crop side
PER_CROP = SIDE * SIDE
# (H, W) pairs: the checkpoints' [[336,672],[672,336],[672,672],[1008,336],[336,1008]] scaled by 32/336
PINPOINTS = [[CROP * a, CROP * b] for a, b in ((1, 2), (2, 1), (2, 2), (3, 1), (1, 3))]
QUESTION = "what is the color of the object ? answer using a single word ."


def build_tiny_next(out: Path, tasks_dir: Path, *, vision_layers: int = 3, seed: int = 0, text: str = "llama",
                    processor_pinpoints=None, processor_patch: int = PATCH, processor_crop: int = CROP) -> Path:
    """Save a random tiny LLaVA-NeXT (model, processor, tokenizer) into ``out`` and return it.
    ``processor_*`` give the processor other settings than the model config (the error cases)."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(tasks_dir)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=vision_layers,
                              num_attention_heads=2, image_size=CROP, patch_size=PATCH, projection_dim=32,
                              initializer_range=0.3)
    lm = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
          "num_key_value_heads": 2, "vocab_size": len(tokenizer), "max_position_embeddings": 4096,
          "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3, "tie_word_embeddings": False,
          "initializer_range": 0.3}
    text_config = MistralConfig(**lm, sliding_window=None) if text == "mistral" else LlamaConfig(**lm)
    config = LlavaNextConfig(vision_config=vision, text_config=text_config,
                             image_token_index=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
                             vision_feature_select_strategy="default", image_grid_pinpoints=PINPOINTS,
                             projector_hidden_act="gelu", initializer_range=0.3, tie_word_embeddings=False)
    model = LlavaNextForConditionalGeneration(config).eval()
    with torch.no_grad():  # wide random weights, so that greedy answers differ from sample to sample
        for name, p in model.named_parameters():
            if "vision_tower" in name and p.dim() == 2:
                p.normal_(0, 0.1)
        model.model.image_newline.normal_(0, 1.0)
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 3
    model.save_pretrained(out)
    image_processor = LlavaNextImageProcessor(size={"shortest_edge": processor_crop},
                                              crop_size={"height": processor_crop, "width": processor_crop},
                                              image_grid_pinpoints=processor_pinpoints or PINPOINTS)
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=processor_patch,
                                   vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
                                   num_additional_image_tokens=1)
    processor.save_pretrained(out)
    return out


def next_pipeline(folder: Path, dtype: str = "float64"):
    """The family pipeline over a saved tiny NeXT on CPU, in ``dtype`` (float64 by default: identities
    with the unmodified model are proven there, at float64's rounding bound)."""
    from dymu_eval.vlm import llava_next as nx

    return nx.load_pipeline(str(folder), "cpu", dtype, None, {})


def next_request(pipe, images=(), name: str = "sample", question: str = QUESTION):
    """A simple-path request (lmms-eval's ``llava_hf`` prompt) with these images."""
    from dymu_eval.vlm import llava_next as nx

    text, _ = nx.simple_prompt(pipe.tokenizer, question, len(images))
    return nx.Request(text, list(images), name=name)

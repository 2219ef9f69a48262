"""Tiny random Llama and Qwen2 decoders with grouped-query attention, saved and read back."""
from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 97, "max_position_embeddings": 256, "initializer_range": 0.2}
FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
}


def tiny_decoder(tmp_dir, family: str = "llama", dtype: torch.dtype = torch.float64, **overrides):
    """Random model of ``family``, written with save_pretrained and read back (the real loading path)
    in ``dtype``: float64 by default, where the identities the language tests prove hold to ~1e-13."""
    config_cls, model_cls = FAMILIES[family]
    torch.manual_seed(1)
    model = model_cls(config_cls(**{**TINY, **overrides}))
    model.save_pretrained(tmp_dir)
    return model_cls.from_pretrained(tmp_dir, dtype=dtype).eval()

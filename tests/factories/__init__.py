"""Tiny random checkpoints for the tests, built from configs and saved with ``save_pretrained``.

One place for every builder, so a test folder never reaches into another's conftest:

- ``towers``: CLIP, SigLIP and DINOv2 vision towers (and a LLaVA around one, without a processor).
- ``decoders``: Llama and Qwen2 causal LMs with grouped-query attention.
- ``llava`` / ``onevision``: whole LLaVA-1.5 / LLaVA-OneVision folders (model, processor, tokenizer).
- ``media``: folders of random images and small ``.mp4`` videos.
"""
from tests.factories.paths import ROOT, TASKS

__all__ = ["ROOT", "TASKS"]

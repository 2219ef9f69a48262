"""Hugging Face vision towers (CLIP, SigLIP, DINOv2, and those inside LLaVA) run block by block
with token merging and proportional attention."""
from .runner import EncoderOutput, VisionRunner
from .towers import encoder_key, layers_for_feature_layer, resolve_tower

__all__ = ["EncoderOutput", "VisionRunner", "encoder_key", "layers_for_feature_layer", "resolve_tower"]

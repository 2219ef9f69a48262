"""Language side of DyMU: VTU attention, FastV, and the prefill/decode loop over HF decoders.

Importing this package registers the "dymu_vtu" attention function with transformers.
"""
from .attention import ATTENTION_NAME, dymu_attention, use_dymu_attention, virtual_attention
from .families import SUPPORTED_ROPE_TYPES, DecoderInfo, describe_decoder, split_causal_lm
from .fastv import FastV
from .layout import VirtualLayout
from .loop import Decoding, GenerationOutput, Timing, generate, loglikelihood, prefill, prefill_logits
from .pruning import Cut, CutView, Pruner, Pruning, Stage
from .sampling import DecodeConfig

__all__ = [
    "ATTENTION_NAME",
    "Cut",
    "CutView",
    "SUPPORTED_ROPE_TYPES",
    "DecodeConfig",
    "Decoding",
    "DecoderInfo",
    "FastV",
    "GenerationOutput",
    "Pruner",
    "Pruning",
    "Stage",
    "Timing",
    "VirtualLayout",
    "describe_decoder",
    "dymu_attention",
    "generate",
    "loglikelihood",
    "prefill",
    "prefill_logits",
    "split_causal_lm",
    "use_dymu_attention",
    "virtual_attention",
]

"""The Python API: a checkpoint with a reduction method, then generate / loglikelihood on prompts
with images or videos, and the per-request stats. The same code path lmms-eval's models use (the
family's request builder, the method's registered builder, the pipeline's batch runner).

    from dymu_eval import api
    vlm = api.load("llava-hf/llava-1.5-7b-hf", level="low")  # DyMU-low; method=... for another
    answers, stats = vlm.generate(["What is shown?"], [[Image.open("photo.jpg")]])
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .methods import FAMILIES, FamilySpec
from .vocabulary import AUTO_DTYPE, DEFAULT_METHOD, LLAVA_15


@dataclass
class VLM:
    """A loaded model with its reduction; ``family_args`` are the family's settings (max_frames_num ...)."""

    pipe: Any
    family: FamilySpec
    family_args: dict[str, Any]

    def _requests(self, prompts: Sequence[str], visuals: Sequence[Sequence[Any]] | None,
                  continuations: Sequence[str] | None = None) -> tuple[list, list]:
        if isinstance(prompts, str):
            raise ConfigError("prompts must be a list of strings (one per request), not one string")
        visuals = visuals if visuals is not None else [[] for _ in prompts]
        if len(visuals) != len(prompts) or (continuations is not None and len(continuations) != len(prompts)):
            raise ConfigError(f"{len(prompts)} prompts, {len(visuals)} visual lists"
                              + ("" if continuations is None else f" and {len(continuations)} continuations")
                              + ": give one of each per request")
        build = self.family.function("simple_request")
        reqs, fulls = [], []
        for i, (prompt, media) in enumerate(zip(prompts, visuals)):
            cont = None if continuations is None else continuations[i]
            req, full = build(self.pipe, prompt, list(media), f"request {i}", cont, self.family_args)
            reqs.append(req)
            fulls.append(full)
        return reqs, fulls

    def generate(self, prompts: Sequence[str], visuals: Sequence[Sequence[Any]] | None = None,
                 max_new_tokens: int = 64, stop: Sequence[str] = (), temperature: float = 0.0,
                 seed: int = 0) -> tuple[list[str], list[dict[str, Any]]]:
        """Answers and per-request stats. ``visuals[i]``: request i's images (PIL) and video paths."""
        from .language import DecodeConfig

        reqs, _ = self._requests(prompts, visuals)
        config = DecodeConfig(max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                              temperature=temperature if temperature > 0 else 1.0, eos_token_ids=self.pipe.eos_ids,
                              stop_strings=list(stop), tokenizer=self.pipe.tokenizer, seed=seed)
        return self.pipe.generate(reqs, config)

    def loglikelihood(self, prompts: Sequence[str], continuations: Sequence[str],
                      visuals: Sequence[Sequence[Any]] | None = None) -> tuple[list[tuple[float, bool]], list[dict]]:
        """(sum of log-probs of each continuation after its prompt, greedy?) and per-request stats."""
        reqs, fulls = self._requests(prompts, visuals, continuations)
        return self.pipe.loglikelihood(reqs, fulls)


def load(pretrained: str = LLAVA_15, method: str = DEFAULT_METHOD, *, device_map: str | None = None,
         dtype: str = AUTO_DTYPE, attn_implementation: str | None = None, **settings: Any) -> VLM:
    """The checkpoint (its family from its model_type) with ``method`` and its settings as model_args
    (``level="low"``, ``r=8``, ``fastv_k=2`` ..., and the family's own such as ``max_frames_num``)."""
    import torch

    from .lmms.args import parse_model_args  # the model_args rules lmms-eval's models apply
    from .vlm.checkpoint import family_of_checkpoint
    from .vlm.reduction import load_reduced

    family = family_of_checkpoint(pretrained, "llava", "dymu_eval.api.load")
    given = {"pretrained": pretrained, "method": method, "dtype": dtype, **settings}
    if attn_implementation is not None:
        given["attn_implementation"] = attn_implementation
    args = parse_model_args(given, "dymu_llava", family=family)
    pipe = load_reduced(args, device_map or ("cuda" if torch.cuda.is_available() else "cpu"))
    return VLM(pipe, FAMILIES[family], args.family_args)

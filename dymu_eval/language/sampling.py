"""Decoding settings and the next-token rule (greedy, or temperature + top-p sampling), plus stop strings."""
from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError

__all__ = ["DecodeConfig", "choose_next", "find_stop"]


@dataclass
class DecodeConfig:
    """What to generate. ``seed`` seeds one generator per sample, so a sample draws the same tokens
    whether it runs alone or in a batch. ``stop_strings`` need ``tokenizer`` (they are matched on text)."""

    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    eos_token_ids: Sequence[int] = ()
    stop_strings: Sequence[str] = ()
    tokenizer: Any = None
    seed: int | None = None
    pad_token_id: int | None = None

    def check(self) -> None:
        ids = self.eos_token_ids
        try:
            if isinstance(ids, (str, bytes)) or any(isinstance(t, (bool, str)) for t in ids):
                raise TypeError
            self.eos_token_ids = tuple(operator.index(t) for t in ids)
        except TypeError:
            try:
                self.eos_token_ids = (operator.index(ids),)
            except TypeError:
                raise ConfigError(f"eos_token_ids={ids!r}: must be token ids (integers)") from None
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 0:
            raise ConfigError(f"max_new_tokens={self.max_new_tokens!r}: must be an integer >= 0")
        if self.do_sample and not self.temperature > 0:
            raise ConfigError(f"temperature={self.temperature!r}: must be > 0 when sampling")
        if not 0 < float(self.top_p) <= 1:
            raise ConfigError(f"top_p={self.top_p!r}: must be in (0, 1]")
        if isinstance(self.stop_strings, str):
            raise ConfigError("stop_strings must be a list of strings, not one string")
        if any(not isinstance(s, str) or not s for s in self.stop_strings):
            raise ConfigError(f"stop_strings={list(self.stop_strings)!r}: each must be a non-empty string")
        if self.stop_strings and self.tokenizer is None:
            raise ConfigError("stop_strings need a tokenizer to decode the generated tokens")

    def generators(self, batch: int, device: torch.device) -> list[torch.Generator] | None:
        if not self.do_sample:
            return None
        gens = []
        for _ in range(batch):
            g = torch.Generator(device=device)
            if self.seed is None:
                g.seed()
            else:
                g.manual_seed(int(self.seed))
            gens.append(g)
        return gens


def choose_next(logits: torch.Tensor, config: DecodeConfig, generators: list[torch.Generator] | None) -> torch.Tensor:
    """(B, V) logits -> (B,) next token ids."""
    if not config.do_sample:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / float(config.temperature), dim=-1)
    if config.top_p < 1:
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p  # mass of the strictly better tokens
        sorted_p = sorted_p.masked_fill(before >= float(config.top_p), 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    out = [torch.multinomial(probs[b], 1, generator=generators[b]) for b in range(probs.shape[0])]
    return torch.cat(out)


def find_stop(text: str, stop_strings: Sequence[str]) -> int:
    """Index where the earliest stop string starts in ``text``, or -1."""
    hits = [i for i in (text.find(s) for s in stop_strings) if i >= 0]
    return min(hits) if hits else -1

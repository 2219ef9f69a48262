"""Helpers for the language tests: random VTU layouts and the rows they index (the decoders
themselves come from ``tests.factories.decoders``)."""
from __future__ import annotations

import torch

from dymu_eval.language import VirtualLayout, split_causal_lm


def random_layout(lengths_u, lengths_v, k=1, seed=0):
    """A random VTU layout: every unique row used at least once, extra entries random, weights random if k > 1."""
    g = torch.Generator().manual_seed(seed)
    maps, weights = [], []
    for nu, nv in zip(lengths_u, lengths_v):
        cover = torch.randperm(nu, generator=g)
        extra = torch.randint(0, nu, (nv - nu,), generator=g)
        order = torch.cat([cover, extra])[torch.randperm(nv, generator=g)]
        if k == 1:
            maps.append(order)
            weights.append(torch.ones(nv))
        else:
            m = torch.cat([order[:, None], torch.randint(0, nu, (nv, k - 1), generator=g)], 1)
            maps.append(m)
            weights.append(torch.rand(nv, k, generator=g) + 0.1)
    return VirtualLayout.from_mappings(maps, lengths_u, weights)


def parts(model):
    return split_causal_lm(model)


def unique_rows(model, layout, seed=0):
    """Random-token embeddings for the unique rows (padding rows left at zero)."""
    g = torch.Generator().manual_seed(seed)
    dec, _ = parts(model)
    ids = torch.randint(0, model.config.vocab_size, layout.unique_valid.shape, generator=g)
    with torch.no_grad():
        emb = dec.embed_tokens(ids)
    return emb * layout.unique_valid.unsqueeze(-1)

"""Word-anchored start for the micro LLaVA's projector.

Why: a randomly initialised projector gives the frozen LLM image tokens that mean nothing,
and a yes/no answer sends almost no gradient back to tokens it does not yet attend to, so
LLaVA-style training on two CPU cores spends most of its budget before the image starts to
matter. Generated scenes say exactly what lies under every patch, so before that training the
projector is fitted (cheaply, without running the LLM) to map each patch to word embeddings the
LLM already reads: ``" red" + " circle"`` for a patch inside a red circle, ``" background"``
elsewhere. The LLaVA-style training then starts from image tokens that already name their content.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

from dymu_eval.errors import ConfigError
from dymu_eval.offline import synthetic

BACKGROUND = -1   # patch label: no object under it
AMBIGUOUS = -2    # patch label: partly covered, left out of the fit


def patch_labels(facts: synthetic.Facts, grid: int, min_cover: float = 0.5) -> np.ndarray:
    """Per patch (row-major, ``grid * grid``): the index of the object covering at least
    ``min_cover`` of it, BACKGROUND if no object touches it, AMBIGUOUS otherwise."""
    size = facts.size
    canvas = Image.new("I", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for k, obj in enumerate(facts.objects):
        synthetic.draw_shape(draw, obj, fill=k + 1, outline=k + 1)
    ids = np.asarray(canvas, dtype=np.int64)
    edges = np.linspace(0, size, grid + 1).round().astype(int)
    labels = np.empty(grid * grid, dtype=np.int64)
    for r in range(grid):
        for c in range(grid):
            cell = ids[edges[r]:edges[r + 1], edges[c]:edges[c + 1]]
            covered = np.bincount(cell.ravel(), minlength=len(facts.objects) + 1)[1:]  # pixels per object
            if covered.sum() == 0:
                labels[r * grid + c] = BACKGROUND
            elif covered.max() >= min_cover * cell.size:
                labels[r * grid + c] = int(covered.argmax())
            else:
                labels[r * grid + c] = AMBIGUOUS
    return labels


def word_vector(embeddings: torch.Tensor, tokenizer, words: str) -> torch.Tensor:
    """Sum over words of each word's mean token embedding (as it reads mid-sentence, with a space)."""
    out = torch.zeros(embeddings.shape[1])
    for word in words.split():
        ids = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
        out += embeddings[ids].mean(0)
    return out


def anchor_targets(facts_list: list[synthetic.Facts], grid: int, embeddings: torch.Tensor,
                   tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """``(targets, kind)``: a word-embedding target per patch, (N, grid*grid, D), and what the
    patch shows, (N, grid*grid): 1 an object, 0 background, -1 partly covered (not fitted)."""
    cache: dict[str, torch.Tensor] = {}

    def vec(words: str) -> torch.Tensor:
        if words not in cache:
            cache[words] = word_vector(embeddings, tokenizer, words)
        return cache[words]

    targets = torch.zeros(len(facts_list), grid * grid, embeddings.shape[1])
    kind = torch.full((len(facts_list), grid * grid), -1, dtype=torch.long)
    for n, facts in enumerate(facts_list):
        for p, label in enumerate(patch_labels(facts, grid)):
            if label == BACKGROUND:
                targets[n, p], kind[n, p] = vec("background"), 0
            elif label != AMBIGUOUS:
                targets[n, p], kind[n, p] = vec(facts.objects[label].name), 1
    return targets, kind


def fit_projector(projector: torch.nn.Module, feats: torch.Tensor, targets: torch.Tensor, kind: torch.Tensor,
                  steps: int, lr: float = 1e-3, batch: int = 2048, seed: int = 0) -> float:
    """Fit ``projector`` so patch features map to their targets (MSE). Each batch is half object
    and half background patches: objects are rare but are what questions ask about. Returns the last loss."""
    groups = [(feats[kind == k], targets[kind == k]) for k in (1, 0)]
    if any(len(x) == 0 for x, _ in groups):
        raise ConfigError("anchoring needs both object and background patches")
    g = torch.Generator().manual_seed(seed)
    optim = torch.optim.Adam(projector.parameters(), lr=lr)
    loss = torch.tensor(float("nan"))
    for _ in tqdm(range(steps), desc="anchor projector", unit="step"):
        picks = [torch.randint(0, len(x), (batch // 2,), generator=g) for x, _ in groups]
        x = torch.cat([gx[i] for (gx, _), i in zip(groups, picks)])
        y = torch.cat([gy[i] for (_, gy), i in zip(groups, picks)])
        loss = torch.nn.functional.mse_loss(projector(x), y)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
    return float(loss.detach())


@torch.no_grad()
def word_accuracy(projector: torch.nn.Module, feats: torch.Tensor, targets: torch.Tensor, kind: torch.Tensor) -> dict:
    """How often a patch's projection is nearest to its own target among all targets seen
    (every colour-shape name and the background), for object and background patches."""
    fitted = kind >= 0
    vocab, which = torch.unique(targets[fitted], dim=0, return_inverse=True)
    nearest = torch.cdist(projector(feats[fitted]), vocab).argmin(-1)
    right, k = nearest == which, kind[fitted]
    return {"object": round(float(right[k == 1].float().mean()), 4),
            "background": round(float(right[k == 0].float().mean()), 4)}

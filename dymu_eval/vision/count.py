"""Visual tokens per image under merge policies: images -> pixels -> encoder -> counts."""
from __future__ import annotations

from typing import Any, Callable

from tqdm import tqdm

from ..merge import Policy


def count_tokens(runner: Any, source: Any, policies: dict[str, Policy], preprocess: Callable,
                 batch_size: int = 16, progress: bool = True) -> dict[str, list[int]]:
    """name -> visual tokens (CLS excluded) of every image of ``source`` under that policy.

    ``runner`` is a :class:`~dymu_eval.vision.VisionRunner`, ``source`` an image source
    (``len`` and ``load(i)``), ``preprocess`` maps a list of images to pixels
    (:func:`~dymu_eval.vision.preprocess.preprocess_for`). Each batch is decoded once.
    """
    counts: dict[str, list[int]] = {name: [] for name in policies}
    starts = range(0, len(source), batch_size)
    for start in tqdm(starts, desc="token counts", unit="batch", disable=not progress):
        pixels = preprocess([source.load(i) for i in range(start, min(start + batch_size, len(source)))])
        for name, policy in policies.items():
            counts[name].extend(runner(pixels, policy).visual_counts())
    return counts

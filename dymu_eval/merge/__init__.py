"""Token merging as pure tensor algorithms (no transformers import): bipartite matching,
selection policies (ToMe, DToMe, calibration), size-weighted merging, the token order after a
merge, schedules and levels.
``merge.select`` holds the fixed-budget selections made after the encoder (random, pool, VisionZip)."""
from .levels import KNOWN_LEVELS, level_fraction, r_for_level
from .matching import Matching, bipartite_scores
from .order import Layout
from .policies import BatchTopK, NoMerge, Policy, Threshold, TopR
from .schedules import merges_per_layer
from .state import TokenState, apply_merges

__all__ = [
    "KNOWN_LEVELS", "BatchTopK", "Layout", "Matching", "NoMerge", "Policy", "Threshold",
    "TokenState", "TopR", "apply_merges", "bipartite_scores", "level_fraction", "merges_per_layer",
    "r_for_level",
]

"""Running things: lmms-eval runs built from one :class:`RunSpec` (the paper's matrix behind
``dymu-eval reproduce``, the demo's comparison), with the checks made before they start.

``report/`` only reads what these runs write.
"""
from .spec import RunSpec, lmms_eval_argv, results_done, run_logged

__all__ = ["RunSpec", "lmms_eval_argv", "results_done", "run_logged"]

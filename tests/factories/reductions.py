"""The built-in methods' reductions as the tests build them: through each method's registered
builder (``vlm.reduction.build_reduction``), from a runner (and model) without a loaded pipeline."""
from __future__ import annotations

from dymu_eval.methods.settings import resolve_method_args
from dymu_eval.vlm.reduction import BuildContext, build_reduction


def _build(method: str, args: dict, runner=None, model=None, names=(), call="per_image", decoder_layers=None):
    values = resolve_method_args(method, {k: v for k, v in args.items() if v is not None})
    return build_reduction(method, values, BuildContext(model, runner, list(names), call, decoder_layers))


def tome_reduction(runner, r, level, schedule, vtu, merge_order="reference"):
    return _build("tome", {"r": r, "level": level, "schedule": schedule, "vtu": vtu, "merge_order": merge_order},
                  runner)


def dymu_reduction(model, runner, names, thresholds, level, r, schedule, vtu, *, merge_order="reference",
                   call="per_image", ignore_fingerprint=None):
    args = {"thresholds": thresholds, "level": level, "r": r, "schedule": schedule, "vtu": vtu,
            "merge_order": merge_order, "ignore_fingerprint": ignore_fingerprint}
    return _build("dymu", args, runner, model, names, call)


def fastv_reduction(k, ratio, decoder_layers=None):
    return _build("fastv", {"fastv_k": k, "fastv_ratio": ratio}, decoder_layers=decoder_layers)


def random_reduction(runner, keep, seed):
    return _build("random", {"keep": keep, "seed": seed}, runner)


def pool_reduction(runner, factor, vtu):
    return _build("pool", {"pool_factor": factor, "vtu": vtu}, runner)


def visionzip_reduction(runner, dominant, contextual, vtu):
    return _build("visionzip", {"dominant": dominant, "contextual": contextual, "vtu": vtu}, runner)


def pdrop_reduction(layers, ratios, decoder_layers=None):
    return _build("pdrop", {"pdrop_layers": layers, "pdrop_ratios": ratios}, decoder_layers=decoder_layers)


def dart_reduction(layer, budget, decoder_layers=None):
    return _build("dart", {"dart_layer": layer, "dart_budget": budget}, decoder_layers=decoder_layers)

"""How close two computations of the same quantity must be when they differ only in rounding.

The pipeline reproduces the unmodified model *exactly in mathematics*: the same sums, taken in
another order, through other kernels, in batches of another shape. In floating point each order
rounds differently, and how a CPU's BLAS blocks a matrix product is its own business, so a fixed
``atol=1e-5`` on fp32 logits passes on one machine and fails on the next. The tests prove every
identity in float64 with a bound derived from its eps, and check the fp32/bf16 paths users run
with the same bound in their own dtype.
"""
from __future__ import annotations

from typing import Any

import torch

# Anything that is not a whole forward pass (one attention call over a few dozen positions, a mean of a
# few rows, a small matrix product) chains fewer roundings than this; ``forward_ops`` counts a forward.
SMALL_OPS = 256


def tolerance(dtype: torch.dtype, magnitude: float, ops: int) -> float:
    """Absolute tolerance for two computations of one value of size ``magnitude`` that differ only in rounding.

    Each rounding is off by at most eps/2 relative (the unit roundoff), and a result reached through
    a chain of ``ops`` dependent roundings of values about ``magnitude`` in size is within about
    ``ops * eps/2 * magnitude`` of the exact value (the first-order worst-case bound, e.g. for a dot
    product of length n: n * eps/2 * sum |x_i y_i|; Higham, *Accuracy and Stability of Numerical
    Algorithms*, §3.1), whatever order the kernels sum in. Two such computations are within twice that
    of each other: ``ops * eps * magnitude``. It is a worst case, so it holds on any BLAS; callers count
    ``ops`` generously (``forward_ops``) to cover cancellation and the growth through layers. In float64
    it stays ~1e-12 of the magnitude for a forward of the tiny test models, where a real mistake (a wrong
    position, row, mask or weight) moves values by a sizeable fraction of it.
    """
    return float(ops) * torch.finfo(dtype).eps * float(magnitude)


def forward_ops(config: Any, sequence: int) -> int:
    """The longest chain of dependent roundings in a forward pass over ``sequence`` positions.

    Per layer a value passes through a dot product over the hidden width, one over the MLP width and a
    softmax sum over the sequence (a tower's: one image's patches and CLS), plus a few elementwise steps
    (norms, activations, residual adds); summed over the layers of every sub-model of ``config`` (a VLM's
    tower and decoder), with the lm head's dot product. It bounds what rounding can do, so it is generous
    by design: in float64 the bound stays ~1e-10 of the magnitude even for the 135M-parameter micro
    models; in fp32 it makes a loose check of the users' dtype, while float64 proves the identity.
    """
    subs = [c for c in (getattr(config, "vision_config", None), getattr(config, "text_config", None)) if c]
    ops = 0
    for c in subs or [config]:
        width = int(c.hidden_size)
        mlp = int(getattr(c, "intermediate_size", None) or width * int(getattr(c, "mlp_ratio", 4)))
        length = sequence
        if getattr(c, "patch_size", None):
            length = (int(c.image_size) // int(c.patch_size)) ** 2 + 1
        ops += int(c.num_hidden_layers) * (width + mlp + length + 16) + width
    return ops


def assert_rounding_close(got: torch.Tensor, want: torch.Tensor, ops: int, what: str = "values") -> None:
    """``got`` equals ``want`` up to ``tolerance(dtype, max |want|, ops)`` (both of one dtype)."""
    assert got.dtype == want.dtype, f"{what}: comparing {got.dtype} with {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} vs {tuple(want.shape)}"
    got, want = got.detach(), want.detach()
    magnitude = max(float(want.abs().max()), 1.0) if want.numel() else 1.0
    tol = tolerance(want.dtype, magnitude, ops)
    worst = float((got - want).abs().max()) if want.numel() else 0.0
    assert worst <= tol, (f"{what}: max |difference| {worst:.3g} exceeds the {want.dtype} rounding bound {tol:.3g} "
                          f"({ops} ops at magnitude {magnitude:.3g})")


def assert_loglik_close(got: float, want: float, logprobs: torch.Tensor, ops: int) -> None:
    """A summed log-likelihood ``got`` equals ``want`` up to rounding. ``logprobs`` (n, V) are the reference's
    log-softmax rows that were summed: their size bounds the values rounded, and the log-softmax adds a
    sum over the vocabulary to the chain of ``ops``."""
    magnitude = float(logprobs.abs().max()) * logprobs.shape[0] + abs(want)
    tol = tolerance(logprobs.dtype, max(magnitude, 1.0), ops + logprobs.shape[-1])
    assert abs(got - want) <= tol, f"log-likelihood {got!r} vs {want!r}: beyond the {logprobs.dtype} bound {tol:.3g}"

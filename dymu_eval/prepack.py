"""Linear layers with their weights packed once for oneDNN, for CPU runs in float32.

On a CPU, MKL's matrix product re-packs the whole weight matrix into its blocked layout at every
call: a fixed cost per layer that does not shrink with the rows. At a 7B decoder's widths that
makes 130 rows cost ~1.4x more per FLOP than 617 (measured on a 2-core Zen 3), so a reduced
sequence cannot turn its FLOP savings into time. oneDNN takes a weight packed ahead of time and
keeps its speed per FLOP flat down to a few rows; PyTorch's own compiler does this when it freezes
a CPU model (``torch._inductor`` uses the same ``mkldnn`` ops). With many rows MKL's own kernels
are faster again (~165-180 against ~150-155 GFLOP/s from 600 rows up, at CLIP-L's and Llama-7B's
widths on that CPU), so a product of fewer than ``PACKED_BELOW_ROWS`` rows takes the packed copy
and a longer one stays with MKL. It is an opt-in switch (``cpu_prepack=true``, ``dymu-eval bench
--cpu-prepack``) because the packed copy costs as much memory again as the Linear weights.

The layers stay ``nn.Linear`` (hooks, ``state_dict``, ``.weight`` are untouched); only ``forward``
changes: it runs ``F.linear`` for ``PACKED_BELOW_ROWS`` rows and more, and whenever the packed copy
cannot stand for the weight (another device or dtype, autograd); a weight changed in place since it
was packed is packed again. FLOP counting (``torch.utils.flop_counter``) counts the packed op as a Linear.
"""
from __future__ import annotations

import math
import types

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import flop_registry, register_flop_formula

from .errors import ConfigError

# below this many rows (the product of an input's leading sizes) the packed copy is faster; at and
# above it MKL's kernels are (the crossover measured at 300-600 rows on a 2-core Zen 3)
PACKED_BELOW_ROWS = 512
_PACK = getattr(torch.ops.mkldnn, "_reorder_linear_weight", None)
_LINEAR = getattr(torch.ops.mkldnn, "_linear_pointwise", None)


def unavailable_reason() -> str | None:
    """Why packed Linear layers cannot run in this PyTorch build (None: they can)."""
    if not torch.backends.mkldnn.is_available():
        return "this PyTorch build has no oneDNN (mkldnn)"
    try:
        _linear(torch.ones(1, 2), _pack(torch.ones(3, 2)), None)
    except (RuntimeError, AttributeError, TypeError) as exc:  # an op missing or refused by this build/CPU
        return f"oneDNN's packed linear does not run here ({str(exc).splitlines()[0]})"
    return None


def _pack(weight: torch.Tensor) -> torch.Tensor:
    return _PACK(weight.detach(), None)


def _linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return _LINEAR(x, packed, bias, "none", [], "")


class _Packed:
    """A Linear's packed weight and the weight version it was packed from."""

    def __init__(self, weight: torch.Tensor, below_rows: int):
        self.tensor = _pack(weight)
        self.source = (weight.data_ptr(), weight._version)
        self.below_rows = below_rows

    def fresh(self, weight: torch.Tensor) -> bool:
        return self.source == (weight.data_ptr(), weight._version)


def _packed_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    weight = self.weight
    on_cpu_fp32 = all(t.device.type == "cpu" and t.dtype == torch.float32 for t in (x, weight))
    grads = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    if not on_cpu_fp32 or grads or x.numel() >= self._dymu_packed.below_rows * x.shape[-1]:
        return F.linear(x, weight, self.bias)
    if not self._dymu_packed.fresh(weight):
        self._dymu_packed = _Packed(weight, self._dymu_packed.below_rows)
    bias = self.bias
    return _linear(x, self._dymu_packed.tensor, None if bias is None else bias.detach())


def prepack_linears(model: nn.Module, below_rows: int = PACKED_BELOW_ROWS) -> int:
    """Give every float32 CPU ``nn.Linear`` of ``model`` a packed weight, used for products of fewer
    than ``below_rows`` rows (the crossover is the CPU's: ``dymu-eval bench --prepack-below-rows``
    measures another); returns how many. ConfigError when this build cannot run them (say why,
    instead of failing in the first forward)."""
    if below_rows < 1:
        raise ConfigError(f"cpu_prepack: below_rows={below_rows} must be >= 1")
    reason = unavailable_reason()
    if reason:
        raise ConfigError(f"cpu_prepack: {reason}")
    count = 0
    for module in model.modules():
        if (isinstance(module, nn.Linear) and module.weight.device.type == "cpu"
                and module.weight.dtype == torch.float32 and not hasattr(module, "_dymu_packed")):
            module._dymu_packed = _Packed(module.weight, below_rows)
            module.forward = types.MethodType(_packed_forward, module)
            count += 1
    return count


def check_prepack(device: str, dtype: torch.dtype | str, option: str = "cpu_prepack") -> None:
    """ConfigError naming ``option`` unless the run is on the CPU in float32 (the packed path's case)
    and this PyTorch build runs packed Linear layers: checked before a model loads."""
    if not str(device).startswith("cpu"):
        raise ConfigError(f"{option}: packs weights for the CPU; this run is on {device}")
    if dtype not in (torch.float32, "float32", "auto"):
        raise ConfigError(f"{option}: packs float32 weights; this run is in {dtype} (use float32)")
    reason = unavailable_reason()
    if reason:
        raise ConfigError(f"{option}: {reason}")


if _LINEAR is not None and _LINEAR not in flop_registry:
    @register_flop_formula(_LINEAR)
    def _packed_linear_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
        """2 per multiply-add, as ``aten.mm`` counts a Linear."""
        return 2 * math.prod(x_shape[:-1]) * x_shape[-1] * w_shape[0]

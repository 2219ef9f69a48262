"""Prepacked Linear layers (``cpu_prepack``): the same products as ``F.linear`` up to rounding, the packed
op really runs (and is counted as a Linear), and every case it cannot stand for falls back exactly."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from dymu_eval import api, prepack
from dymu_eval.errors import ConfigError
from dymu_eval.prepack import PACKED_BELOW_ROWS, check_prepack, prepack_linears, unavailable_reason
from dymu_eval.vlm import llava
from tests.factories import TASKS
from tests.factories.decoders import tiny_decoder
from tests.helpers.numerics import assert_rounding_close, forward_ops, tolerance

# the refusals are tested on every build; what needs the packed op to run is skipped, saying why, where it cannot
needs_packed_op = pytest.mark.skipif(unavailable_reason() is not None, reason=f"cpu_prepack: {unavailable_reason()}")
PACKED_OP = getattr(torch.ops.mkldnn, "_linear_pointwise", None)


def _linear(k: int = 64, n: int = 48, bias: bool = True) -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(k, n, bias=bias).eval()


def _ops_run(fn) -> tuple[torch.Tensor, dict, int]:
    """(fn()'s result, the ops FlopCounterMode saw -> FLOPs, total FLOPs)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = fn()
    return out, counter.get_flop_counts()["Global"], counter.get_total_flops()


def _assert_gemm_close(got: torch.Tensor, lin: torch.nn.Linear, x: torch.Tensor) -> None:
    """``got`` is x W^T + b up to an fp32 dot product's rounding bound (Higham: K * eps * sum |x_i w_i|)."""
    x, weight = x.detach(), lin.weight.detach()
    bias = None if lin.bias is None else lin.bias.detach()
    want = F.linear(x.double(), weight.double(), None if bias is None else bias.double())
    size = x.double().abs() @ weight.double().abs().T + (0 if bias is None else bias.double().abs())
    tol = tolerance(torch.float32, float(size.max()) if size.numel() else 1.0, x.shape[-1] + 1)
    assert got.dtype == torch.float32 and got.shape == want.shape
    if want.numel():
        assert float((got.double() - want).abs().max()) <= tol


@needs_packed_op
@pytest.mark.parametrize("shape", [(5, 64), (2, 7, 64), "transposed", (0, 64)])
@pytest.mark.parametrize("bias", [True, False])
def test_packed_linear_is_the_product_and_counts_as_one(shape, bias):
    lin = _linear(bias=bias)
    x = torch.randn(7, 2, 64).transpose(0, 1) if shape == "transposed" else torch.randn(*shape)
    assert prepack_linears(lin) == 1
    got, ops, total = _ops_run(lambda: lin(x))
    assert set(ops) == {PACKED_OP}, f"the packed op did not run: {ops}"
    rows = x.numel() // 64
    assert total == 2 * rows * 64 * 48  # the same count as aten's Linear: 2 per multiply-add
    _assert_gemm_close(got, lin, x)


@needs_packed_op
def test_a_weight_changed_in_place_is_packed_again():
    lin, x = _linear(), torch.randn(4, 64)
    prepack_linears(lin)
    with torch.no_grad():
        lin(x)
        lin.weight.mul_(-2.0)  # a stale packed copy would give minus half of these values
        got = lin(x)
    _assert_gemm_close(got, lin, x)
    lin.load_state_dict({"weight": torch.randn(48, 64), "bias": torch.randn(48)})
    with torch.no_grad():
        _assert_gemm_close(lin(x), lin, x)


@needs_packed_op
def test_what_the_packed_copy_cannot_stand_for_runs_f_linear_exactly():
    lin, x = _linear(), torch.randn(3, 64, requires_grad=True)
    prepack_linears(lin)
    # autograd: F.linear, bit for bit, and the gradients flow
    got = lin(x)
    want = F.linear(x, lin.weight, lin.bias)
    assert torch.equal(got, want)
    got.sum().backward()
    assert x.grad is not None and lin.weight.grad is not None
    # many rows: MKL's own product, bit for bit
    many = torch.randn(2, PACKED_BELOW_ROWS // 2, 64)
    got, ops, _ = _ops_run(lambda: lin(many))
    assert PACKED_OP not in ops and torch.equal(got, F.linear(many, lin.weight, lin.bias))
    _, ops, _ = _ops_run(lambda: lin(many[:, 1:]))
    assert set(ops) == {PACKED_OP}
    # another dtype after packing: F.linear in that dtype, not the float32 copy
    lin.double()
    xd = x.detach().double()
    got, ops, _ = _ops_run(lambda: lin(xd))
    assert PACKED_OP not in ops and got.dtype == torch.float64
    assert torch.equal(got, F.linear(xd, lin.weight, lin.bias))


@needs_packed_op
def test_the_crossover_is_the_callers():
    lin, x = _linear(), torch.randn(2, 3, 64)
    prepack_linears(lin, below_rows=6)
    got, ops, _ = _ops_run(lambda: lin(x))  # 6 rows: at the crossover, MKL's product
    assert PACKED_OP not in ops and torch.equal(got, F.linear(x, lin.weight, lin.bias))
    _, ops, _ = _ops_run(lambda: lin(x[:, 1:]))
    assert set(ops) == {PACKED_OP}
    with torch.no_grad():
        lin.weight.add_(1.0)  # repacked, keeping its crossover
        lin(x[:, 1:])
    _, ops, _ = _ops_run(lambda: lin(x))
    assert PACKED_OP not in ops
    with pytest.raises(ConfigError, match="below_rows=0 must be >= 1"):
        prepack_linears(_linear(), below_rows=0)


@needs_packed_op
def test_a_prepacked_decoder_gives_the_unpacked_logits(tmp_path):
    model = tiny_decoder(tmp_path, dtype=torch.float32)
    ids = torch.randint(0, model.config.vocab_size, (2, 11))
    with torch.no_grad():
        want = model(input_ids=ids).logits
        linears = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
        assert prepack_linears(model) == linears and prepack_linears(model) == 0  # once per layer
        got = model(input_ids=ids).logits
    assert_rounding_close(got, want, forward_ops(model.config, 11), "prepacked logits")


@needs_packed_op
def test_cpu_prepack_model_arg_scores_as_the_unpacked_model(tiny_llava):
    img = llava.Image.open(TASKS / "dymu_offline" / "images" / "photo_astronaut.jpg").convert("RGB")
    plain = api.load(str(tiny_llava), method="tome", r=4, device_map="cpu")
    packed = api.load(str(tiny_llava), method="tome", r=4, device_map="cpu", cpu_prepack=True)
    assert all(hasattr(m, "_dymu_packed") for m in packed.pipe.model.modules() if isinstance(m, torch.nn.Linear))
    assert not any(hasattr(m, "_dymu_packed") for m in plain.pipe.model.modules())
    (want, _), = plain.loglikelihood(["What is shown?"], ["a person"], [[img]])[0]
    (got, _), = packed.loglikelihood(["What is shown?"], ["a person"], [[img]])[0]
    # a summed log-likelihood of a few tokens: rounding through one forward of the VLM, at its size
    tol = tolerance(torch.float32, max(abs(want), 1.0), forward_ops(plain.pipe.model.config, 96))
    assert abs(got - want) <= tol, f"prepacked log-likelihood {got} vs {want} (bound {tol:.3g})"


@pytest.mark.parametrize("device, dtype, fault", [("cuda", torch.float32, "on cuda"),
                                                   ("cpu", torch.bfloat16, "bfloat16"),
                                                   ("cpu", "float64", "float64")])
def test_the_packed_path_is_refused_off_cpu_fp32(device, dtype, fault):
    with pytest.raises(ConfigError, match=f"cpu_prepack: .*{fault}"):
        check_prepack(device, dtype)
    with pytest.raises(ConfigError, match="--cpu-prepack"):
        check_prepack(device, dtype, "--cpu-prepack")


def _refusing_linear(*args, **kwargs):
    raise RuntimeError("could not create a primitive descriptor for an inner product\nmore lines")


@pytest.mark.parametrize("patch, why", [
    (lambda mp: mp.setattr(torch.backends.mkldnn, "is_available", lambda: False), "no oneDNN"),
    (lambda mp: mp.setattr(prepack, "_LINEAR", _refusing_linear),
     r"does not run here \(could not create a primitive descriptor for an inner product\)$"),
])
def test_a_build_without_the_packed_op_is_refused_in_one_line(monkeypatch, tiny_llava, patch, why):
    patch(monkeypatch)
    assert unavailable_reason() is not None
    for refuse in (lambda: check_prepack("cpu", torch.float32, "--cpu-prepack"),
                   lambda: prepack_linears(torch.nn.Linear(2, 3))):
        with pytest.raises(ConfigError, match=why) as err:
            refuse()
        assert "\n" not in str(err.value)
    monkeypatch.setattr(llava, "load_pipeline", lambda *a: pytest.fail("the checkpoint loaded before the refusal"))
    with pytest.raises(ConfigError, match=f"cpu_prepack: .*{why}"):
        api.load(str(tiny_llava), method="none", device_map="cpu", cpu_prepack=True)


def test_the_model_arg_is_checked_before_loading(tiny_llava):
    with pytest.raises(ConfigError, match="cpu_prepack"):
        api.load(str(tiny_llava), method="none", device_map="cpu", dtype="bfloat16", cpu_prepack=True)
    with pytest.raises(ConfigError, match="cpu_prepack"):
        api.load(str(tiny_llava), method="none", device_map="cpu", cpu_prepack="perhaps")

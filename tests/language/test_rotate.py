"""VTU's RoPE is the model's own: the same roundings as HF's rotate-half formula, bit for bit."""
from __future__ import annotations

import pytest
import torch
from transformers.models.llama.modeling_llama import rotate_half

from dymu_eval.language.state import rotate


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("x_shape, angle_shape", [((2, 4, 9, 16), (2, 1, 9, 16)), ((1, 3, 1, 8), (1, 1, 1, 8)),
                                                  ((2, 1, 5, 16), (2, 4, 5, 16))])
def test_rotate_equals_hf_rotate_half_exactly(dtype, x_shape, angle_shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(x_shape, generator=g).to(dtype)
    theta = torch.rand(angle_shape, generator=g) * 50
    cos, sin = theta.cos().to(dtype), theta.sin().to(dtype)
    want = x * cos + rotate_half(x) * sin
    got = rotate(x, cos, sin)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert torch.equal(got, want)

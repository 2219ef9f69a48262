"""Fixtures: tiny random Llama and Qwen2 decoders with grouped-query attention, saved and reloaded, in
float64 (where the loop's identities hold to float64 rounding) and one Llama in the fp32 users run."""
from __future__ import annotations

import pytest
import torch

from tests.factories.decoders import FAMILIES, tiny_decoder


@pytest.fixture(scope="session", params=sorted(FAMILIES))
def model(request, tmp_path_factory):
    return tiny_decoder(tmp_path_factory.mktemp(request.param), request.param)


@pytest.fixture(scope="session")
def llama(tmp_path_factory):
    return tiny_decoder(tmp_path_factory.mktemp("llama_only"), "llama")


@pytest.fixture(scope="session")
def llama32(tmp_path_factory):
    return tiny_decoder(tmp_path_factory.mktemp("llama_fp32"), "llama", torch.float32)

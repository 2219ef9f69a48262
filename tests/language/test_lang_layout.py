"""VirtualLayout constructors and the errors bad layouts raise (each names the sample and the problem)."""
from __future__ import annotations

import pytest
import torch

from dymu_eval.errors import ConfigError
from dymu_eval.language import VirtualLayout


def test_identity_is_left_padded_with_positions_from_zero():
    lay = VirtualLayout.identity([3, 5])
    assert lay.is_identity and lay.virtual_lengths == [3, 5] and lay.unique_lengths == [3, 5]
    assert lay.valid[0].tolist() == [False, False, True, True, True]
    assert lay.positions[0, 2:].tolist() == [0, 1, 2] and lay.positions[1].tolist() == [0, 1, 2, 3, 4]


def test_from_mappings_offsets_indices_past_padding_and_expands():
    lay = VirtualLayout.from_mappings([[0, 1, 1, 1, 2], [0, 0, 1]], [3, 2])
    assert not lay.is_identity
    assert lay.index[1, 2:, 0].tolist() == [1, 1, 2]  # sample 1's rows start after one padding row
    rows = torch.arange(6.0).view(2, 3, 1)
    assert lay.expand(rows)[0, :, 0].tolist() == [0, 1, 1, 1, 2]
    assert lay.expand(rows)[1, 2:, 0].tolist() == [4, 4, 5]


def test_weighted_mix_and_single_sample_round_trip():
    lay = VirtualLayout.from_mappings([torch.tensor([[0, 1], [1, 1]]), torch.tensor([[0, 0]])], [2, 1],
                                      weights=[torch.tensor([[0.25, 0.75], [1.0, 0.0]]), torch.tensor([[1.0, 0.0]])])
    rows = torch.tensor([[[4.0], [8.0]], [[0.0], [2.0]]])
    assert lay.expand(rows)[0, :, 0].tolist() == [7.0, 8.0]
    single = lay.sample(1)
    assert single.unique_len == 1 and single.virtual_len == 1 and single.index.tolist() == [[[0, 0]]]


def test_without_vtu_is_consecutive_unique_positions():
    lay = VirtualLayout.consecutive([4])
    assert lay.positions.tolist() == [[0, 1, 2, 3]] and lay.is_identity


@pytest.mark.parametrize("build, match", [
    (lambda: VirtualLayout.from_mappings([[0, 3]], [3]), "sample 0: virtual entry 1 maps to unique row \\[3\\]"),
    (lambda: VirtualLayout.from_mappings([[0], [0, -1]], [1, 2]), "sample 1: virtual entry 1 maps to unique row"),
    (lambda: VirtualLayout.from_mappings([[0, 1]], [2], positions=[[0, 1, 2]]), "positions length mismatch"),
    (lambda: VirtualLayout.from_mappings([[0, 1]], [2], positions=[[-1, 0]]), "sample 0.*negative position"),
    (lambda: VirtualLayout.from_mappings([[0, 1], [0, 1]], [2, 2], positions=[[0, 1], [3, 3]]),
     "sample 1: position 3 at virtual entry 1 does not increase"),
    (lambda: VirtualLayout.from_mappings([[0, 1]], [2, 2]), "mappings has 1 samples but unique_lengths has 2"),
    (lambda: VirtualLayout.from_mappings([[0, 1]], [2], weights=[torch.ones(3)]), "sample 0: weights have shape"),
    (lambda: VirtualLayout.from_mappings([[0, 1]], [2], weights=[torch.tensor([1.0, 0.0])]),
     "sample 0: virtual entry 1 has weights summing to zero"),
    (lambda: VirtualLayout.from_mappings([[0, 1]], [2], weights=[torch.tensor([1.0, -1.0])]), "negative"),
    (lambda: VirtualLayout.identity([2, 0]), "sample 1: lengths must be positive"),
    (lambda: VirtualLayout.identity([]), "no samples"),
])
def test_bad_layouts_name_sample_and_problem(build, match):
    with pytest.raises(ConfigError, match=match):
        build()


def test_raw_tensor_mismatches():
    good = VirtualLayout.identity([2, 3])
    with pytest.raises(ConfigError, match="sample count mismatch"):
        VirtualLayout(good.index, good.weight, good.positions, good.valid, good.unique_valid[:1])
    with pytest.raises(ConfigError, match="positions length mismatch"):
        VirtualLayout(good.index, good.weight, good.positions[:, :2], good.valid, good.unique_valid)
    with pytest.raises(ConfigError, match="maps to a padding unique row"):
        VirtualLayout(torch.zeros_like(good.index), good.weight, good.positions, good.valid, good.unique_valid)
    with pytest.raises(ConfigError, match="sample 1: no valid virtual entry"):
        valid = good.valid.clone()
        valid[1] = False
        VirtualLayout(good.index, good.weight, good.positions, valid, good.unique_valid)

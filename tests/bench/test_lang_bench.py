"""`dymu-eval bench language` prints the analytic FLOP ratio next to each measured time ratio."""
from __future__ import annotations

import json

import pytest

from dymu_eval.cli import main


@pytest.mark.slow
def test_bench_language_prints_flop_ratios(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "language", "--random", "--image-tokens", "32", "--unique-image", "8", "--new-tokens", "2",
            "--fastv-keep", "0.25", "--repeats", "1", "--warmup", "0", "--json", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "FLOP ratio" in text
    ratios = {r["variant"]: r["flop_ratio"] for r in json.loads(out.read_text())["prefill"]}
    full, identity, vtu, wo, fastv, control = list(ratios.values())[:6]
    assert list(ratios)[5] == "HF forward, unique rows only" and control == wo  # the same rows, no VTU code
    assert [k.split()[0] for k in list(ratios)[6:]] == ["FastV", "PDrop", "DART"]  # the registry's pruners
    # SparseVLM's default keeps 300 image tokens at its first stage: this 32-token request cannot run it
    assert "sparsevlm_keep" in json.loads(out.read_text())["skipped"]["sparsevlm"]
    assert full == identity == 1.0
    assert wo < vtu < 1.0  # VTU still attends over the virtual length; w/o VTU does not
    assert fastv < 1.0

"""`dymu-eval bench encoder` wiring (a smoke run on a tiny encoder; timings are not checked)."""
from __future__ import annotations

import json

import pytest

from dymu_eval.bench import available
from dymu_eval.cli import main


def test_bench_encoder_smoke(tiny_dirs, tmp_path, capsys):
    pytest.importorskip("skimage", reason="sample photos come from the scikit-image wheel")
    out = tmp_path / "bench.json"
    argv = ["bench", "encoder", "--encoder", str(tiny_dirs["dinov2"]), "--image-size", "64", "--batch-size", "2",
            "--repeats", "2", "--warmup", "0", "--json", str(out)]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert [r["variant"] for r in data["results"]] == ["plain HF forward", "runner, no merging", "runner, DToMe-low"]
    assert all(r["ratio"] > 0 and r["median_ms"] >= r["min_ms"] > 0 for r in data["results"])
    assert data["results"][2]["mean_tokens"] < data["results"][1]["mean_tokens"]
    # the FLOP ratio sits next to each time ratio: 1 without merging, below 1 with DToMe
    assert [r["flop_ratio"] for r in data["results"][:2]] == [1.0, 1.0]
    assert 0 < data["results"][2]["flop_ratio"] < 1 and data["encoder_gflops_unmerged"] > 0
    assert "FLOP ratio" in capsys.readouterr().out


def test_every_listed_benchmark_registers_its_subcommand():
    from dymu_eval.cli import build_parser

    bench = build_parser()._subparsers._group_actions[0].choices["bench"]
    assert set(bench._subparsers._group_actions[0].choices) == set(available()) == {"encoder", "language"}
    with pytest.raises(SystemExit):
        main(["bench", "no-such-benchmark"])

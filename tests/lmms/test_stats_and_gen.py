"""Where the stats file goes, what a row holds, and how gen_kwargs become decode settings."""
import json

import pytest

from dymu_eval.errors import ConfigError
from dymu_eval.lmms.model import _decode_config
from dymu_eval.lmms.stats import FIELDS, StatsWriter, new_run_stamp, output_path_from_argv, stats_dir


def test_stats_folder_follows_output_path_unless_overridden(tmp_path):
    argv = ["lmms-eval", "--model", "dymu_llava", "--output_path", "runs/x", "--tasks", "pope"]
    assert output_path_from_argv(argv) == "runs/x"
    assert output_path_from_argv(["lmms-eval", "--output_path=runs/y"]) == "runs/y"
    assert stats_dir(None, argv) == (__import__("pathlib").Path("runs/x/dymu_stats"), True)
    assert stats_dir(str(tmp_path), argv) == (tmp_path, True)
    folder, found = stats_dir(None, ["lmms-eval"])
    assert not found and folder.name == "dymu_stats"


def test_rows_have_every_field_in_order(tmp_path):
    stamp = new_run_stamp(["lmms-eval", "--timezone", "UTC"])
    assert len(stamp.split("_")) == 3 and stamp[:8].isdigit()
    w = StatsWriter(tmp_path, stamp, 3, {"model": "dymu_llava", "method": "none"})
    w.write([{"task": "t", "doc_id": 1, "unique_len": 5}])
    w.write([])
    assert w.path == tmp_path / f"{stamp}_rank3.jsonl"
    row = json.loads(w.path.read_text())
    assert list(row) == list(FIELDS)
    assert (row["rank"], row["run_stamp"], row["unique_len"], row["decode_ms"]) == (3, stamp, 5, None)


def test_gen_kwargs_to_decode_config():
    c = _decode_config({"max_new_tokens": 7, "temperature": 0, "until": "\n\n", "do_sample": False}, None, [2])
    assert (c.max_new_tokens, c.do_sample, list(c.stop_strings), list(c.eos_token_ids)) == (7, False, ["\n\n"], [2])
    c = _decode_config({"temperature": 0.7, "top_p": 0.9}, None, [2])
    assert c.do_sample and c.temperature == 0.7 and c.top_p == 0.9 and c.max_new_tokens == 1024
    assert c.seed is not None
    assert not _decode_config({"temperature": 0.7, "do_sample": False}, None, [2]).do_sample
    with pytest.raises(ConfigError, match="beam search"):
        _decode_config({"num_beams": 4}, None, [2])
    with pytest.raises(ConfigError, match="until"):
        _decode_config({"until": 5}, None, [2])

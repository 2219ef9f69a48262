"""Bad options of the `dymu-eval` commands: one line naming the flag, status 2, checked before any work, and
nothing written or deleted. Also the numbers `flops` prints by default, the encoder calling pattern a
checkpoint's family gives, and the --skip-bad and --num-images reports."""
import json
import logging
from dataclasses import replace

import pytest
import torch
from PIL import Image

from dymu_eval.cli import main
from tests.factories.media import write_images

MISSING_ENCODER = "no-such-encoder-folder"  # loading it fails: a check that comes first is made before any work


def _run(capsys, *args):
    """(status, stderr without transformers' weight-loading bar) of one command; the error, if any, must be
    one line without a traceback."""
    rc = main([str(a) for a in args])
    lines = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines()
             if line.strip() and not line.startswith("Loading weights")]
    err = "\n".join(lines)
    if rc == 2:
        assert "Traceback" not in err and len(lines) == 1, err
    return rc, err


def _one_line(capsys, *args) -> str:
    rc, err = _run(capsys, *args)
    assert rc == 2, err
    return err.strip()


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "img"
    write_images(folder, 6, seed=2)
    return folder


# ---- flops --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, says", [
    (["--fastv", "2:1.5"], "--fastv 2:1.5: fastv_ratio=1.5: must be in [0, 1)"),
    (["--fastv", "2:-0.5"], "--fastv 2:-0.5: fastv_ratio=-0.5: must be in [0, 1)"),
    (["--fastv", "2"], "--fastv 2: expected K:R, e.g. 2:0.5"),
    (["--fastv", "two:0.5"], "--fastv two:0.5: expected K:R"),
    (["--fastv", "99:0.5"], "--fastv 99:0.5: fastv_k=99: must be an integer in 1..31 for this 32-layer decoder"),
    (["--fastv", "0:0.5"], "--fastv 0:0.5: fastv_k=0"),
    (["--unique", "100000"], "--unique 100000: more unique rows than the 576 image positions they stand for"),
    (["--unique", "300", "--virtual", "100"], "--unique 300: more unique rows than the 100 image positions"),
    (["--virtual", "0"], "--virtual must be >= 1, got 0"),
    (["--virtual", "-4"], "--virtual must be >= 1, got -4"),
])
def test_flops_refuses_numbers_that_would_print_nonsense(capsys, tmp_path, args, says):
    out = tmp_path / "f.json"
    assert says in _one_line(capsys, "flops", *args, "--json", out)
    assert not out.exists()


def test_flops_json_into_a_folder_or_under_a_file_is_refused_first(capsys, tmp_path):
    (tmp_path / "keep").mkdir()
    assert f"--json {tmp_path / 'keep'}: is a folder" in _one_line(capsys, "flops", "--json", tmp_path / "keep")
    (tmp_path / "file").write_text("x")
    says = _one_line(capsys, "flops", "--json", tmp_path / "file" / "f.json")
    assert f"{tmp_path / 'file'} is a file, not a folder" in says
    assert list((tmp_path / "keep").iterdir()) == [] and (tmp_path / "file").read_text() == "x"


def _small_llava_config(folder, patches_side=16, text_layers=2):
    """A LLaVA config.json whose CLIP sees patches_side**2 patches (no weights: flops reads shapes only)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    LlavaConfig(vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                               num_attention_heads=2, image_size=14 * patches_side, patch_size=14),
                text_config=LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=text_layers,
                                        num_attention_heads=4, num_key_value_heads=2, vocab_size=100),
                ).save_pretrained(folder)
    return folder


def test_flops_default_unique_rows_follow_the_model(capsys, tmp_path):
    """The paper's 89/195/394 of 576 positions become the same fractions of a 256-position model; every
    reduced setting then costs less than the full one."""
    model = _small_llava_config(tmp_path / "m")
    out = tmp_path / "f.json"
    assert main(["flops", "--model", str(model), "--json", str(out)]) == 0
    assert "scaled to this model's 256" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert [r["n_unique"] for r in data["table1"]] == [256, 40, 87, 175]
    base, *rest = data["stages"]
    assert all(0 < r["prefill_gflops"] < base["prefill_gflops"] for r in rest)
    assert not any(r["setting"].startswith("FastV") for r in data["stages"])  # K=2 needs a deeper decoder
    assert "1..1 for this 2-layer decoder" in _one_line(capsys, "flops", "--model", model, "--fastv", "2:0.5")
    # the paper's own model keeps the paper's counts
    assert main(["flops", "--json", str(out)]) == 0
    assert [r["n_unique"] for r in json.loads(out.read_text())["table1"]] == [576, 89, 195, 394]


# ---- tokens -------------------------------------------------------------------------------------------


def _tokens(tiny_dirs, images, tmp_path, *extra):
    return ["tokens", "--encoder", tiny_dirs["clip"], "--images", images, "--json", tmp_path / "o.json", *extra]


@pytest.mark.parametrize("extra, says", [
    (["--image-size", "0"], "--image-size must be >= 1, got 0"),
    (["--image-size", "7"], "--image-size 7: smaller than one 8-pixel patch of this encoder"),
    (["--layers-run", "0"], "--layers-run must be >= 1, got 0"),
    (["--layers-run", "9"], "--layers-run 9: this encoder has 4 blocks"),
    (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["--level", "low", "--thresholds", "t.json"], "--level low and --thresholds contradict each other"),
    (["--r", "2", "--thresholds", "t.json"], "--r 2 and --thresholds contradict each other"),
    (["--ignore-fingerprint"], "--ignore-fingerprint applies to --thresholds only"),
])
def test_tokens_options_name_the_flag(tiny_dirs, images, tmp_path, capsys, extra, says):
    assert says in _one_line(capsys, *_tokens(tiny_dirs, images, tmp_path, "--maps", tmp_path / "maps", *extra))
    assert not (tmp_path / "o.json").exists() and not (tmp_path / "maps").exists()


def test_tokens_outputs_are_checked_before_the_run(images, tmp_path, capsys):
    (tmp_path / "dir.json").mkdir()
    (tmp_path / "env.sh").write_text("keep")
    args = ["tokens", "--encoder", MISSING_ENCODER, "--images", images]
    says = _one_line(capsys, *args, "--json", tmp_path / "dir.json")
    assert says.endswith(f"--json {tmp_path / 'dir.json'}: is a folder; give a file name")
    says = _one_line(capsys, *args, "--json", tmp_path / "o.json", "--maps", tmp_path / "env.sh")
    assert says.endswith(f"--maps {tmp_path / 'env.sh'}: is a file; give a folder")
    assert (tmp_path / "env.sh").read_text() == "keep" and list((tmp_path / "dir.json").iterdir()) == []


def test_a_failed_tokens_run_leaves_no_empty_maps_folder(tiny_dirs, tmp_path, capsys):
    folder = tmp_path / "img"
    write_images(folder, 2)
    (folder / "a_broken.png").write_bytes(b"")  # sorts first: the first batch fails
    says = _one_line(capsys, "tokens", "--encoder", tiny_dirs["clip"], "--images", folder, "--level", "low",
                     "--json", tmp_path / "o.json", "--maps", tmp_path / "maps" / "run1", "--no-progress")
    assert "a_broken.png: empty file (0 bytes)" in says
    assert not (tmp_path / "maps").exists() and not (tmp_path / "o.json").exists()


def foreign_thresholds_file(model_dir, path):
    """A thresholds file that fits the tower in ``model_dir`` except for the weight fingerprint."""
    from dymu_eval.calibrate import encoder_identity
    from dymu_eval.thresholds import ThresholdRecord, save_record
    from dymu_eval.vision.loading import load_runner

    runner = load_runner(model_dir)
    identity = encoder_identity(runner, "tiny")
    layers = runner.num_layers
    return save_record(ThresholdRecord(
        encoder=replace(identity, fingerprint=identity.fingerprint.rsplit(",", 1)[0] + ",9.9e+00"),
        dataset={"name": "toy", "kind": "folder", "source": "/x", "num_images": 4, "fingerprint": "sha256:0"},
        calibration={"level": "low", "r": 2, "r_per_layer": [2] * layers, "schedule": "constant"},
        thresholds=[0.5] * layers,
    ), path)


def test_tokens_ignore_fingerprint_is_the_override_the_message_names(tiny_dirs, images, tmp_path, capsys, caplog):
    thresholds = foreign_thresholds_file(tiny_dirs["clip"], tmp_path / "foreign.json")
    args = _tokens(tiny_dirs, images, tmp_path, "--thresholds", thresholds)
    says = _one_line(capsys, *args)
    assert "--ignore-fingerprint (dymu-eval tokens, thresholds compare)" in says
    assert not (tmp_path / "o.json").exists()
    with caplog.at_level(logging.WARNING, logger="dymu_eval.thresholds"):
        assert main([str(a) for a in args] + ["--ignore-fingerprint", "--no-progress"]) == 0
    assert "used anyway" in caplog.text and json.loads((tmp_path / "o.json").read_text())["method"] == "dtome"


# ---- calibrate ----------------------------------------------------------------------------------------


def _calibrate(encoder, images, out, *extra):
    return ["calibrate", "--encoder", encoder, "--dataset", "toy", "--images", images, "--batch-size", 2,
            "--out", out, "--no-progress", *extra]


@pytest.mark.parametrize("extra, says", [
    (["--workers", "-1"], "--workers must be >= 0, got -1"),
    (["--stats-images", "-1"], "--stats-images must be >= 0, got -1"),
    (["--max-image-pixels", "0"], "--max-image-pixels must be >= 1, got 0"),
    (["--num-images", "0"], "--num-images must be >= 1, got 0"),
    (["--r", "-1"], "--r must be >= 0, got -1"),
])
def test_calibrate_numbers_name_the_flag_before_anything_loads(images, tmp_path, capsys, extra, says):
    out = tmp_path / "t.json"
    assert says in _one_line(capsys, *_calibrate(MISSING_ENCODER, images, out, *extra))
    assert not out.exists()


def test_calibrate_out_folder_is_refused_before_the_calibration(images, tmp_path, capsys):
    (tmp_path / "outdir").mkdir()
    (tmp_path / "outdir" / "keep.txt").write_text("keep")
    says = _one_line(capsys, *_calibrate(MISSING_ENCODER, images, tmp_path / "outdir", "--overwrite"))
    assert says.endswith(f"--out {tmp_path / 'outdir'}: is a folder; give a file name")
    assert (tmp_path / "outdir" / "keep.txt").read_text() == "keep"


def test_calibrate_r_beyond_what_the_tower_can_merge(tiny_dirs, images, tmp_path, capsys):
    # 64 patches + CLS over 4 blocks: r merges per block leave 64 - k*r patches, and a block merges at most
    # half of them: 5r <= 64 in the last block, so r = 12 is the largest
    says = _one_line(capsys, *_calibrate(tiny_dirs["clip"], images, tmp_path / "t.json", "--r", "1000"))
    assert "--r 1000: the constant schedule merges 1000 tokens in layer 0" in says
    assert says.endswith("the largest --r this encoder allows is 12")
    says = _one_line(capsys, *_calibrate(tiny_dirs["clip"], images, tmp_path / "t.json", "--r", "13"))
    assert "--r 13: the constant schedule merges 13 tokens in layer 3" in says
    assert not (tmp_path / "t.json").exists()


def test_calibrate_says_when_fewer_images_exist_than_asked(tiny_dirs, images, tmp_path, capsys):
    out = tmp_path / "t.json"
    rc, _ = _run(capsys, *_calibrate(tiny_dirs["clip"], images, out, "--r", "4", "--num-images", "1000",
                                     "--stats-images", "0"))
    assert rc == 0
    from dymu_eval.thresholds import load_record

    rec = load_record(out)
    assert rec.calibration["images_used"] == 6 and rec.dataset["num_images"] == 6
    assert rec.calibration["notes"] == [f"1000 images asked for, but {images} has 6: all 6 used"]


def test_skip_bad_names_each_path_once_and_counts_short_batches(tiny_dirs, tmp_path, capsys):
    folder = tmp_path / "mix"
    write_images(folder, 5, seed=4)
    (folder / "img_001b.png").write_bytes(b"\x89PNG garbage")  # in the second batch of 2
    Image.new("RGB", (1, 1)).save(folder / "zz_tiny.png")  # the trailing image: token statistics only
    main(["calibrate", "--encoder", str(tiny_dirs["clip"]), "--dataset", "toy", "--images", str(folder),
          "--batch-size", "2", "--r", "4", "--out", str(tmp_path / "t.json"), "--no-progress", "--skip-bad"])
    captured = capsys.readouterr()
    assert "5 images in 3 batches of 2 (1 bad image(s) skipped in them)" in captured.out
    assert "1 trailing images dropped" in captured.out
    garbage, tiny = str(folder / "img_001b.png"), str(folder / "zz_tiny.png")
    lines = captured.err.splitlines()
    assert any(line.strip().startswith(f"{garbage}: not an image") for line in lines)
    assert any(line.strip().startswith(f"{tiny} (token statistics only): 1x1 is too small") for line in lines)
    assert captured.err.count(garbage) == 1 and captured.err.count(tiny) == 1


# ---- the encoder calling pattern follows the checkpoint's family ----------------------------------------


@pytest.mark.parametrize("family, call", [("onevision", "batched"), ("llava", "per_image")])
def test_calibrate_and_tokens_call_the_encoder_as_the_family_does(tiny_onevision, tiny_llava_dir, tmp_path, capsys,
                                                                 family, call):
    encoder = {"onevision": tiny_onevision, "llava": tiny_llava_dir}[family]
    folder = tmp_path / "img"
    write_images(folder, 4, seed=1)
    out = tmp_path / "t.json"
    assert main([str(a) for a in _calibrate(encoder, folder, out, "--r", "2", "--stats-images", "4")]) == 0
    from dymu_eval.thresholds import load_record

    assert load_record(out).token_stats["call"] == call
    tokens = tmp_path / "tokens.json"
    assert main(["tokens", "--encoder", str(encoder), "--images", str(folder), "--thresholds", str(out),
                 "--json", str(tokens), "--no-progress"]) == 0
    assert json.loads(tokens.read_text())["encoder_call"] == call
    other = {"batched": "per_image", "per_image": "batched"}[call]  # --encoder-call still overrides
    assert main(["tokens", "--encoder", str(encoder), "--images", str(folder), "--thresholds", str(out),
                 "--json", str(tokens), "--no-progress", "--encoder-call", other]) == 0
    assert json.loads(tokens.read_text())["encoder_call"] == other


# ---- thresholds compare, bench --------------------------------------------------------------------------


@pytest.mark.parametrize("extra, says", [
    (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["--num-images", "0"], "--num-images must be >= 1, got 0"),
    (["--ignore-fingerprint", "--encoder-name", "x"], "--ignore-fingerprint applies to counting tokens with --images"),
])
def test_compare_numbers_name_the_flag(images, capsys, extra, says):
    args = ["thresholds", "compare", "--datasets", "a,b", *extra]
    if "--encoder-name" not in extra:
        args += ["--encoder", MISSING_ENCODER, "--images", images]
    assert says in _one_line(capsys, *args)


def test_compare_out_must_be_a_folder(tmp_path, capsys):
    (tmp_path / "f").write_text("keep")
    says = _one_line(capsys, "thresholds", "compare", "--encoder-name", "x", "--datasets", "a,b",
                     "--out", tmp_path / "f")
    assert says.endswith(f"--out {tmp_path / 'f'}: is a file; give a folder")
    assert (tmp_path / "f").read_text() == "keep"


@pytest.mark.parametrize("bench", ["encoder", "language"])
@pytest.mark.parametrize("extra, says", [
    (["--device", "cuda"], "--device cuda: no CUDA device is available here; use --device cpu"),
    (["--device", "gpu0"], "--device gpu0: not a torch device"),
    (["--warmup", "-1"], "--warmup must be >= 0, got -1"),
    (["--threads", "0"], "--threads must be >= 1, got 0"),
    (["--repeats", "0"], "--repeats must be >= 1, got 0"),
])
def test_bench_options_are_checked_before_loading(monkeypatch, capsys, bench, extra, says):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert says in _one_line(capsys, "bench", bench, *extra)


@pytest.mark.parametrize("bench", ["encoder", "language"])
def test_bench_json_into_a_folder_is_refused(tmp_path, capsys, bench):
    assert f"--json {tmp_path}: is a folder" in _one_line(capsys, "bench", bench, "--json", tmp_path)


# ---- Ctrl-C -------------------------------------------------------------------------------------------


def test_ctrl_c_is_one_line_and_status_130(monkeypatch, capsys):
    from dymu_eval import accounting

    def interrupted(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(accounting, "load_shape", interrupted)
    assert main(["flops"]) == 130
    assert capsys.readouterr().err == "dymu-eval flops: interrupted\n"

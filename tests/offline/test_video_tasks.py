"""Offline video tasks: the clips regenerate byte for byte, their pixels and answers agree with
what was drawn, and lmms-eval loads the tasks and hands the model .mp4 paths typed as video."""
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

from dymu_eval.errors import AssetUnavailable, ConfigError
from dymu_eval.offline import clips
from dymu_eval.offline.mp4 import encoder_signature, read_mp4, write_mp4
from dymu_eval.offline.synthetic import COLOURS

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tasks" / "dymu_offline"
VIDEO_TASKS = ("dymu_video_pope_offline", "dymu_video_qa_offline")


def _builder():
    spec = importlib.util.spec_from_file_location("make_videos", ROOT / "tasks" / "_build" / "make_videos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    """The whole video data set regenerated into a temporary folder (about 15 s)."""
    out = tmp_path_factory.mktemp("videos")
    try:
        data = _builder().write(out)
    except AssetUnavailable as exc:  # the photo clips need the wheels that ship the photos
        pytest.skip(str(exc))
    return out, data


@pytest.mark.slow
def test_regeneration_is_byte_for_byte(rebuilt):
    out, _ = rebuilt
    for name in ("video_pope.jsonl", "video_qa.jsonl"):
        assert (out / name).read_bytes() == (DATA / name).read_bytes(), name
    shipped, now = json.loads((DATA / "videos.json").read_text()), json.loads((out / "videos.json").read_text())
    assert now["clips"] == shipped["clips"]
    committed = sorted(p.name for p in (DATA / "videos").glob("*.mp4"))
    assert committed == sorted(p.name for p in (out / "videos").glob("*.mp4")) and len(committed) >= 30
    if shipped["encoder"] != encoder_signature():
        pytest.skip(f"clips were encoded with {shipped['encoder']}; this environment has {encoder_signature()}")
    for name in committed:
        assert (out / "videos" / name).read_bytes() == (DATA / "videos" / name).read_bytes(), name


def test_writer_is_deterministic_and_lossy_only_a_little(tmp_path):
    frames, _ = clips.shape_clip(5, "move", "plain")
    write_mp4(frames, tmp_path / "a.mp4", clips.FPS)
    write_mp4(frames, tmp_path / "b.mp4", clips.FPS)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    back = read_mp4(tmp_path / "a.mp4")
    assert len(back) == clips.NUM_FRAMES and back[0].shape == (clips.FRAME_SIZE, clips.FRAME_SIZE, 3)
    assert np.abs(np.stack(back).astype(int) - np.stack(frames)).mean() < 3


def test_bad_frames_and_unreadable_videos_are_named(tmp_path):
    with pytest.raises(ConfigError, match="odd.mp4"):
        write_mp4([np.zeros((5, 6, 3), np.uint8)], tmp_path / "odd.mp4", 8)
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(Exception, match="junk.mp4"):
        read_mp4(tmp_path / "junk.mp4")


@pytest.mark.parametrize("kind", clips.SHAPE_KINDS)
def test_shape_clip_pixels_follow_the_facts(kind):
    for seed in range(6):
        frames, facts = clips.shape_clip(seed, kind, ("plain", "busy", "noisy")[seed % 3])
        assert len(frames) == len(facts.frames) == clips.NUM_FRAMES
        for t, objs in enumerate(facts.frames):
            for o in objs:
                assert tuple(frames[t][int(o.cy), int(o.cx)]) == COLOURS[o.colour], (seed, t, o)
        if kind != "move":  # the event lasts at least a third of the clip, and starts after a third
            assert clips.NUM_FRAMES // 3 <= facts.change_frame <= clips.NUM_FRAMES // 2
        if kind == "appear":
            assert facts.frames[0] == [] and len(facts.last()) == 1
        if kind == "recolour":
            assert facts.first()[0].colour != facts.last()[0].colour


def test_photo_clips_pan_and_zoom():
    from dymu_eval.offline.photos import sample_photos

    try:
        path = sample_photos(["chelsea"])["chelsea"]
    except AssetUnavailable as exc:
        pytest.skip(str(exc))
    for kind in clips.CAMERA_KINDS:
        frames = clips.photo_clip(path, kind)
        assert len(frames) == clips.NUM_FRAMES and not np.array_equal(frames[0], frames[-1])
    with pytest.raises(ConfigError, match="tilt"):
        clips.photo_clip(path, "tilt")


def _answer(question: str, facts: clips.ClipFacts) -> str | None:
    """Independent reading of the question templates against a clip's facts."""
    if m := re.fullmatch(r"Is there a (\w+) (\w+) in the video\?", question):
        return "yes" if (m.group(2), m.group(1)) in facts.seen() else "no"
    if question == "What shape appears in the video?":
        return facts.last()[0].shape
    if question == "How many shapes are there?":
        return str(len(facts.first()))
    if m := re.fullmatch(r"What color is the (\w+) at the (start|end) of the video\?", question):
        return (facts.first() if m.group(2) == "start" else facts.last())[0].colour
    if m := re.fullmatch(r"What color is the (\w+)\?", question):
        (colour,) = {o.colour for objs in facts.frames for o in objs if o.shape == m.group(1)}
        return colour
    return None


@pytest.mark.slow
def test_answers_agree_with_the_clips_and_yes_no_is_balanced(rebuilt):
    _, data = rebuilt
    checked = 0
    for task in ("video_pope", "video_qa"):
        for row in data[task]:
            facts = data["facts"][row["video"]]
            if facts is None:  # a photo clip: answers written by looking at the photo
                assert row["source"] == "photo"
                continue
            assert _answer(row["question"], facts) == row["answer"], row
            checked += 1
    assert checked >= 90
    answers = [r["answer"] for r in data["video_pope"]]
    assert answers.count("yes") == answers.count("no")
    complexity = {r["source"]: [] for r in data["clips"]}
    for r in data["clips"]:
        complexity[r["source"]].append(r["complexity"])
    assert max(complexity["plain"]) < min(complexity["busy"]) and max(complexity["plain"]) < min(complexity["noisy"])


def test_lmms_eval_loads_the_video_tasks_and_types_their_visuals_as_video():
    from lmms_eval.api.task import ConfigurableMessagesTask
    from lmms_eval.tasks import TaskManager, get_task_dict

    manager = TaskManager("ERROR", include_path=str(ROOT / "tasks"), include_defaults=False)  # ours only: quick
    tasks = get_task_dict(list(VIDEO_TASKS), manager)
    for name in VIDEO_TASKS:
        task = tasks[name]
        docs = list(task.test_docs())
        assert len(docs) == len((DATA / f"{name[5:-8]}.jsonl").read_text().splitlines())
        for doc in docs[:5]:
            (visual,) = task.doc_to_visual(doc)
            assert visual.endswith(".mp4") and Path(visual).is_absolute() and Path(visual).is_file()
            assert ConfigurableMessagesTask._visual_to_content(visual)["type"] == "video"
            assert task.doc_to_text(doc).startswith(doc["question"])
        assert "video" not in (task.config.dataset_kwargs or {}), "video: True would snapshot_download('json')"


def test_missing_video_names_the_file_and_sample(tmp_path):
    spec = importlib.util.spec_from_file_location("offline_task_utils", DATA / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    with pytest.raises(FileNotFoundError, match=r"nothing\.mp4.*sample video_pope_999"):
        utils.doc_to_video({"video": "videos/nothing.mp4", "question_id": "video_pope_999"})


def test_baseline_measure_samples_frames_like_llava_hf_and_summarises():
    from dymu_eval.offline.video_eval import sample_frames, summary

    frames = [np.full((2, 2, 3), k, np.uint8) for k in range(16)]
    picked = sample_frames(frames, 6)[:, 0, 0, 0].tolist()
    assert picked == np.linspace(0, 15, 6, dtype=int).tolist() == [0, 3, 6, 9, 12, 15]
    rows = [{"answer": a, "prediction": p, "category": "move", "source": "plain", "greedy_is_yes_or_no": True}
            for a, p in (("yes", "yes"), ("yes", "no"), ("no", "no"), ("no", "no"))]
    s = summary(rows)
    assert (s["accuracy"], s["n"], s["yes_ratio"]) == (0.75, 4, 0.25)
    assert s["by"]["answer=yes"]["accuracy"] == 0.5 and s["by"]["kind=move"]["n"] == 4

"""Prompt, image and video helpers for the offline tasks; scoring reuses lmms-eval's own functions.

Images and videos are files beside this module (``image_file`` / ``video`` in each JSON-lines
row), so the tasks need no hub access. An image that cannot be read, or a video that is
missing, fails with an error naming the file and the sample, instead of a bare traceback deep
inside lmms-eval. Videos are handed to the model as absolute ``.mp4`` paths, which lmms-eval
types as video (a ``.webm`` path would be typed as audio).
"""
from __future__ import annotations

import os

from PIL import Image

_HERE = os.path.dirname(os.path.abspath(__file__))


def _load(path: str, sample: str) -> Image.Image:
    label = f"image file {path} (sample {sample})"
    try:
        from dymu_eval.images import load_image
    except ImportError:  # the task folder used without dymu-eval installed
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except Exception as exc:  # PIL raises several types for bad files
            raise OSError(f"{label} cannot be read: {exc}") from exc
    return load_image(path, name=label)


def doc_to_visual(doc: dict) -> list[Image.Image]:
    """The sample's one image as RGB."""
    return [_load(os.path.join(_HERE, doc["image_file"]), str(doc.get("question_id", "?")))]


def doc_to_video(doc: dict) -> list[str]:
    """The sample's one video, as an absolute path (the model decodes and samples its frames)."""
    path = os.path.join(_HERE, doc["video"])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video file {path} (sample {doc.get('question_id', '?')}) does not exist; "
                                "rebuild it with: python tasks/_build/make_videos.py")
    return [path]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """Question wrapped in the model-specific pre/post prompt (LLaVA-1.5's short-answer prompt by default)."""
    kw = lmms_eval_specific_kwargs or {}
    return f"{kw.get('pre_prompt', '')}{doc['question'].strip()}{kw.get('post_prompt', '')}"

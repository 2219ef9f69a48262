"""Write and read short H.264 ``.mp4`` clips with PyAV, reproducibly byte for byte.

Why PyAV: lmms-eval depends on it (``av``), so it is always installed beside the plugin, and
its wheels carry FFmpeg with libx264. The output must be the same bytes on every run, so the
bundled task data can be regenerated and checked: one encoder thread, no B-frames, a fixed
quality and GOP, and FFmpeg's ``bitexact`` mode, which leaves the library version out of the
container. x264 still writes its own version into the stream, so the bytes are reproducible
for one encoder version; :func:`encoder_signature` names that version.

``.mp4`` and not ``.webm``: lmms-eval treats a ``.webm`` path as audio.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dymu_eval.errors import ConfigError, InputImageError

CODEC = "libx264"
CRF = 23
# No B-frames (decode order = display order, which keeps frame seeking simple for every
# decoder), one GOP per short clip, one thread (threaded x264 is not bit-reproducible).
X264_PARAMS = "threads=1:bframes=0:keyint=64:min-keyint=64:scenecut=0"


def encoder_signature() -> str:
    """The library versions that determine the encoded bytes (PyAV and its libavcodec)."""
    import av

    codec = ".".join(str(v) for v in av.library_versions["libavcodec"])
    return f"av {av.__version__}, libavcodec {codec}, {CODEC} crf {CRF} {X264_PARAMS}"


def write_mp4(frames: list[np.ndarray], path: Path | str, fps: int) -> None:
    """Encode RGB uint8 frames (H x W x 3, even H and W) to ``path`` as H.264 yuv420p."""
    import av

    if not frames:
        raise ConfigError(f"{path}: no frames to write")
    height, width = frames[0].shape[:2]
    if height % 2 or width % 2 or any(f.shape != frames[0].shape or f.dtype != np.uint8 for f in frames):
        raise ConfigError(f"{path}: frames must all be uint8 arrays of one even-sized shape, got {frames[0].shape}")
    with av.open(str(path), "w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(CODEC, rate=fps, options={"crf": str(CRF), "preset": "medium",
                                                               "x264-params": X264_PARAMS})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.flags |= av.codec.context.Flags.bitexact
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def read_mp4(path: Path | str) -> list[np.ndarray]:
    """Every frame of a video file as RGB uint8 arrays (an error naming the file if unreadable)."""
    import av

    try:
        with av.open(str(path)) as container:
            return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (OSError, av.error.FFmpegError, ValueError) as exc:
        raise InputImageError(f"video file {path} cannot be decoded: {exc}") from exc

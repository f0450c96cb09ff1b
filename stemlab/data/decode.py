"""Video decoding with PyAV: probe a file's frame count, read the frames at given indices."""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence
from dataclasses import dataclass

import av
import numpy as np

__all__ = ["DecodeError", "VideoInfo", "probe_video", "read_frames"]

# Starting a clip further than this into a video seeks to the nearest keyframe instead of
# decoding everything before it.
_SEEK_AFTER_SECONDS = 2.0


class DecodeError(RuntimeError):
    """A video file could not be opened or decoded."""


@dataclass(frozen=True)
class VideoInfo:
    """What a probe learned about a video file."""

    num_frames: int
    fps: float
    height: int
    width: int


def _open(path: str | os.PathLike[str]) -> av.container.InputContainer:
    try:
        container = av.open(os.fspath(path), mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as error:
        raise DecodeError(f"cannot open: {error}") from error
    if not container.streams.video:
        container.close()
        raise DecodeError("no video stream")
    return container


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Open ``path``, decode its first frame and estimate its frame count.

    Raises:
        DecodeError: if the file is not a readable video.
    """
    with _open(path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        try:
            first = next(container.decode(stream), None)
        except (av.FFmpegError, OSError, ValueError) as error:
            raise DecodeError(f"cannot decode: {error}") from error
        if first is None:
            raise DecodeError("no decodable video frame")
        num_frames = int(stream.frames or 0)
        if num_frames <= 0 and stream.duration is not None and stream.time_base and fps > 0:
            num_frames = round(float(stream.duration * stream.time_base) * fps)
        if num_frames <= 0:
            container.seek(0)
            num_frames = sum(1 for packet in container.demux(stream) if packet.size)
        return VideoInfo(max(num_frames, 1), fps, first.height, first.width)


def _decode_wanted(
    container: av.container.InputContainer, wanted: list[int], fps: float
) -> dict[int, np.ndarray] | None:
    """Decode the frames numbered in ``wanted``; ``None`` when a seek overshot its target."""
    stream = container.streams.video[0]
    start_time = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
    wanted_set = set(wanted)
    got: dict[int, np.ndarray] = {}
    counter = 0
    seeked = fps > 0 and wanted[0] / fps > _SEEK_AFTER_SECONDS and bool(stream.time_base)
    if seeked:
        target = start_time + wanted[0] / fps
        container.seek(int(target / stream.time_base), stream=stream, backward=True)
    try:
        for frame in container.decode(stream):
            if seeked:
                if frame.time is None:
                    return None
                counter = round((frame.time - start_time) * fps)
                if counter > wanted[0]:
                    return None
                seeked = False
            if counter in wanted_set:
                got[counter] = frame.to_ndarray(format="rgb24")
            counter += 1
            if counter > wanted[-1]:
                break
    except (av.FFmpegError, OSError, ValueError) as error:
        if not got:
            raise DecodeError(f"cannot decode: {error}") from error
    return got


def read_frames(
    path: str | os.PathLike[str], indices: Sequence[int], *, fps: float = 0.0
) -> np.ndarray:
    """Decode the frames at ``indices`` (may repeat) as uint8 RGB ``[T, H, W, 3]``.

    Args:
        path: the video file.
        indices: frame numbers, counted from 0.
        fps: the stream's frame rate; when known, clips starting late in the video seek to the
            nearest keyframe instead of decoding from the start.

    Returns:
        The frames in the order of ``indices``. An index past the last decodable frame gets the
        last frame, so a slightly high frame-count estimate still gives a full clip.

    Raises:
        DecodeError: if the file cannot be opened, yields no frame, or its frame size changes
            between the requested frames.
    """
    if not len(indices):
        raise ValueError("indices must not be empty")
    wanted = sorted({int(i) for i in indices})
    with _open(path) as container:
        container.streams.video[0].thread_type = "AUTO"
        got = _decode_wanted(container, wanted, fps)
    if got is None:
        with _open(path) as container:
            got = _decode_wanted(container, wanted, 0.0)
    if not got:
        raise DecodeError("no decodable video frame at the requested indices")
    available = sorted(got)
    sizes = {got[k].shape[:2]: k for k in reversed(available)}
    if len(sizes) > 1:
        (first_size, first_at), (other_size, other_at) = sorted(sizes.items(), key=lambda i: i[1])[
            :2
        ]
        raise DecodeError(
            f"the frame size changes mid-stream ({first_size[0]}x{first_size[1]} at frame "
            f"{first_at}, {other_size[0]}x{other_size[1]} at frame {other_at}); such videos are "
            "skipped, re-encode it at one size to use it"
        )
    frames = []
    for index in indices:
        position = max(bisect.bisect_right(available, int(index)) - 1, 0)
        frames.append(got[available[position]])
    return np.stack(frames)

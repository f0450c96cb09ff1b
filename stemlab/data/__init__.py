"""Datasets: the procedural SyntheticMotion benchmark and VideoFolder for real video files."""

from stemlab.data.decode import DecodeError, VideoInfo, probe_video, read_frames
from stemlab.data.synthetic import MOTIONS, SHAPES, TASKS, TEXTURES, SyntheticMotion
from stemlab.data.video_folder import (
    KINETICS_MEAN,
    KINETICS_STD,
    VIDEO_EXTENSIONS,
    UCF101Layout,
    VideoFolder,
    check_disjoint_splits,
    prepare_hmdb51,
    prepare_ucf101,
)

__all__ = [
    "KINETICS_MEAN",
    "KINETICS_STD",
    "MOTIONS",
    "SHAPES",
    "TASKS",
    "TEXTURES",
    "VIDEO_EXTENSIONS",
    "DecodeError",
    "SyntheticMotion",
    "UCF101Layout",
    "VideoFolder",
    "VideoInfo",
    "check_disjoint_splits",
    "prepare_hmdb51",
    "prepare_ucf101",
    "probe_video",
    "read_frames",
]

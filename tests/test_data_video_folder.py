"""VideoFolder and prepare_ucf101 on small real videos written with PyAV."""

from __future__ import annotations

import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from stemlab.data import (
    DecodeError,
    VideoFolder,
    prepare_hmdb51,
    prepare_ucf101,
    probe_video,
    read_frames,
)

# Frame k of every test video is flat gray with level 10 + 12 (k % 16) on its left half and
# 10 + 12 (k // 16) on its right half, so decoded clips reveal which frames were sampled.
STEP, BASE, DIGIT = 12, 10, 16


def encode(k: int, size: tuple[int, int]) -> np.ndarray:
    frame = np.empty((*size, 3), dtype=np.uint8)
    frame[:, : size[1] // 2] = BASE + STEP * (k % DIGIT)
    frame[:, size[1] // 2 :] = BASE + STEP * (k // DIGIT)
    return frame


def decode(image: torch.Tensor | np.ndarray) -> int:
    """Frame number of an image ``[..., H, W]`` holding values in [0, 255]."""
    width = image.shape[-1]
    left = float(image[..., width // 8 : 3 * width // 8].mean())
    right = float(image[..., 5 * width // 8 : 7 * width // 8].mean())
    return round((left - BASE) / STEP) + DIGIT * round((right - BASE) / STEP)


def write_video(
    path: Path, num_frames: int, *, size: tuple[int, int] = (48, 64), fps: int = 25, gop: int = 12
) -> Path:
    codec = "libx264" if path.suffix == ".mp4" else "mpeg4"
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        for k in range(num_frames):
            frame = av.VideoFrame.from_ndarray(encode(k, size), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def frame_numbers(clip: torch.Tensor) -> list[int]:
    """Which source frame each clip frame shows (clip normalised with mean 0, std 1)."""
    return [decode(clip[:, t].mean(0) * 255) for t in range(clip.shape[1])]


def plain(**kwargs: object) -> dict[str, object]:
    out: dict[str, object] = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "progress": False}
    out.update(kwargs)
    return out


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    write_video(root / "jump" / "a.mp4", 20)
    write_video(root / "jump" / "b.avi", 5)
    write_video(root / "run" / "c.mp4", 20, size=(30, 40))
    write_video(root / "run" / "day2" / "d.avi", 100, gop=10)  # 4 s: late clips seek
    (root / "run" / "notes.txt").write_text("not a video")
    (root / "jump" / "broken.mp4").write_bytes(b"\x00\x01garbage" * 100)
    (root / "jump" / "empty.avi").write_bytes(b"")
    (root / "README.md").write_text("files at the top level are not samples")
    return root


def test_scan_skips_bad_files_with_reasons(library: Path) -> None:
    with pytest.warns(UserWarning, match="skipped 3 file"):
        ds = VideoFolder(library, clip_len=4, size=16, **plain())
    assert ds.classes == ["jump", "run"]
    names = [(Path(p).name, label) for p, label in ds.samples]
    assert names == [("a.mp4", 0), ("b.avi", 0), ("c.mp4", 1), ("d.avi", 1)]
    reasons = {Path(p).name: reason for p, reason in ds.skipped}
    assert set(reasons) == {"broken.mp4", "empty.avi", "notes.txt"}
    assert "not a video file" in reasons["notes.txt"] and ".txt" in reasons["notes.txt"]
    assert "cannot open" in reasons["broken.mp4"]
    assert len(ds) == 4 and ds.targets == [0, 0, 1, 1]


def test_probe_and_read_frames(library: Path) -> None:
    info = probe_video(library / "jump" / "a.mp4")
    assert (info.num_frames, info.fps, info.height, info.width) == (20, 25.0, 48, 64)
    frames = read_frames(library / "jump" / "a.mp4", [3, 3, 0, 19, 25])
    assert frames.shape == (5, 48, 64, 3) and frames.dtype == np.uint8
    assert [decode(f.transpose(2, 0, 1)) for f in frames] == [
        3,
        3,
        0,
        19,
        19,
    ]  # past the end: the last frame


def test_uniform_clip_is_centred(library: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = VideoFolder(library, clip_len=4, size=(24, 32), frame_stride=2, **plain())
    clip, label = ds[0]  # a.mp4: 20 frames, span 7 -> start (20 - 7) // 2 = 6
    assert clip.shape == (3, 4, 24, 32) and clip.dtype == torch.float32 and label == 0
    assert frame_numbers(clip) == [6, 8, 10, 12]
    short, _ = ds[1]  # b.avi: 5 frames; indices past the end repeat the last frame
    assert frame_numbers(short) == [0, 2, 4, 4]
    late, label = ds[3]  # d.avi: 100 frames, start 46 at 25 fps = 1.84 s
    assert frame_numbers(late) == [46, 48, 50, 52] and label == 1


def test_seek_into_long_video(library: Path) -> None:
    path = library / "run" / "day2" / "d.avi"
    frames = read_frames(path, [75, 80, 99], fps=25.0)  # 3 s in: seeks to a keyframe
    assert [decode(f.transpose(2, 0, 1)) for f in frames] == [75, 80, 99]


def test_random_sampling_is_seeded_per_epoch(library: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = VideoFolder(library, clip_len=3, size=16, sampling="random", seed=5, **plain())
        twin = VideoFolder(library, clip_len=3, size=16, sampling="random", seed=5, **plain())
    starts = []
    for epoch in range(6):
        ds.set_epoch(epoch)
        twin.set_epoch(epoch)
        clip, _ = ds[3]
        numbers = frame_numbers(clip)
        assert numbers == frame_numbers(twin[3][0])
        assert numbers[1] - numbers[0] == 1 and numbers[2] - numbers[1] == 1
        assert 0 <= numbers[0] <= 97
        starts.append(numbers[0])
    assert len(set(starts)) > 1


def test_normalisation_and_transform(library: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = VideoFolder(
            library,
            clip_len=2,
            size=8,
            mean=(0.5, 0.5, 0.5),
            std=(0.25, 0.25, 0.25),
            transform=lambda clip: clip * 2,
            progress=False,
        )
    clip, _ = ds[0]  # frames 9 and 10 of a.mp4
    left = torch.tensor([(BASE + STEP * k) / 255 for k in (9, 10)])
    torch.testing.assert_close(
        clip[..., :3].mean(dim=(0, 2, 3)), (left - 0.5) / 0.25 * 2, atol=0.05, rtol=0
    )


def test_split_file_filters_and_reports_missing(library: Path, tmp_path: Path) -> None:
    split = tmp_path / "trainlist01.txt"
    split.write_text("jump/a.mp4 1\nrun/c.mp4 2\nrun/gone.mp4 2\n\n")
    with pytest.warns(UserWarning, match="skipped 1 file"):  # bad files outside the split: ignored
        ds = VideoFolder(library, clip_len=2, size=8, split_file=split, **plain())
    assert [Path(p).name for p, _ in ds.samples] == ["a.mp4", "c.mp4"]
    assert ds.skipped == [
        (str(library / "run" / "gone.mp4"), "listed in trainlist01.txt but not found")
    ]
    names_only = tmp_path / "names.txt"
    names_only.write_text("d.avi 1\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        by_name = VideoFolder(library, clip_len=2, size=8, split_file=names_only, **plain())
    assert [Path(p).name for p, _ in by_name.samples] == ["d.avi"]


def test_file_failing_at_decode_time_is_replaced(tmp_path: Path) -> None:
    write_video(tmp_path / "a" / "good.mp4", 6)
    (tmp_path / "a" / "bad.mp4").write_bytes(b"not really an mp4")
    ds = VideoFolder(tmp_path, clip_len=2, size=8, probe=False, **plain())
    assert [Path(p).name for p, _ in ds.samples] == ["bad.mp4", "good.mp4"]
    with pytest.warns(UserWarning, match="bad.mp4"):
        clip, label = ds[0]
    assert frame_numbers(clip) == [2, 3] and label == 0
    assert [Path(p).name for p, _ in ds.skipped] == ["bad.mp4"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"sampling": "rand"}, ValueError, "sampling"),
        ({"clip_len": 0}, ValueError, "clip_len"),
        ({"size": (8, 8, 8)}, ValueError, "size"),
        ({"frame_stride": 1.5}, TypeError, "frame_stride"),
        ({"mean": (0.5,)}, ValueError, "mean"),
        ({"std": (1.0, 0.0, 1.0)}, ValueError, "std"),
        ({"transform": "flip"}, TypeError, "transform"),
    ],
)
def test_invalid_arguments(
    tmp_path: Path, kwargs: dict, error: type[Exception], match: str
) -> None:
    args = {"clip_len": 2, "size": 8, "progress": False, **kwargs}
    with pytest.raises(error, match=match):
        VideoFolder(tmp_path, **args)


def test_missing_root_and_split(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="root"):
        VideoFolder(tmp_path / "nope", clip_len=2, size=8)
    with pytest.raises(FileNotFoundError, match="split_file"):
        VideoFolder(tmp_path, clip_len=2, size=8, split_file=tmp_path / "nope.txt")


def test_prepare_ucf101(tmp_path: Path) -> None:
    flat = tmp_path / "UCF-101"
    for name in (
        "v_ApplyEyeMakeup_g01_c01.avi",
        "v_Archery_g02_c03.avi",
        "v_HandStandPushups_g08_c01.avi",
    ):
        write_video(flat / name, 4, size=(16, 16))
    (flat / "junk.txt").write_text("x")
    splits = tmp_path / "ucfTrainTestlist"
    splits.mkdir()
    (splits / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n3 HandstandPushups\n")
    (splits / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1\nHandstandPushups/v_HandStandPushups_g08_c01.avi 3\n"
    )
    (splits / "testlist01.txt").write_text("Archery/v_Archery_g02_c03.avi\n")
    out = tmp_path / "ucf101"
    with pytest.warns(UserWarning, match="1 file"):
        layout = prepare_ucf101(flat, out, split_dir=splits, progress=False)
    assert layout.classes == ["ApplyEyeMakeup", "Archery", "HandstandPushups"]
    assert layout.num_videos == 3 and [p.name for p in layout.unmatched] == ["junk.txt"]
    assert set(layout.split_files) == {"classInd", "trainlist01", "testlist01"}
    link = out / "HandstandPushups" / "v_HandStandPushups_g08_c01.avi"
    assert (
        link.is_symlink() and link.resolve() == (flat / "v_HandStandPushups_g08_c01.avi").resolve()
    )

    train = VideoFolder(
        out, clip_len=2, size=8, split_file=layout.split_files["trainlist01"], progress=False
    )
    assert train.classes == layout.classes and train.skipped == []
    assert [label for _, label in train.samples] == [0, 2]

    with pytest.warns(UserWarning):
        again = prepare_ucf101(flat, out, split_dir=splits, link="copy", progress=False)
    assert again.num_videos == 3  # existing links are kept
    with pytest.raises(ValueError, match="link"):
        prepare_ucf101(flat, out, link="teleport")


def test_class_without_readable_video_is_dropped(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    write_video(root / "clap" / "a.mp4", 6, size=(16, 16))
    (root / "dance" / "broken.mp4").parent.mkdir(parents=True)
    (root / "dance" / "broken.mp4").write_bytes(b"\x00garbage" * 50)
    (root / "empty_folder").mkdir()
    write_video(root / "wave" / "b.mp4", 6, size=(16, 16))
    write_video(root / "wave" / "c.mp4", 6, size=(16, 16))
    with pytest.warns(UserWarning) as caught:
        ds = VideoFolder(root, clip_len=2, size=8, **plain())
    messages = [str(w.message) for w in caught]
    dropped = [m for m in messages if "dropped 2 class folder" in m]
    assert len(dropped) == 1 and "dance, empty_folder" in dropped[0]
    assert ds.empty_classes == ["dance", "empty_folder"]
    assert ds.classes == ["clap", "wave"]
    assert ds.class_to_idx == {"clap": 0, "wave": 1}
    assert [(Path(p).name, y) for p, y in ds.samples] == [("a.mp4", 0), ("b.mp4", 1), ("c.mp4", 1)]
    assert [Path(p).name for p, _ in ds.skipped] == ["broken.mp4"]
    assert ds[2][1] == 1 and ds[2][0].shape == (3, 2, 8, 8)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        full = VideoFolder(root / "wave", clip_len=2, size=8, **plain())  # no class folders
    assert full.classes == [] and full.empty_classes == [] and len(full) == 0


def test_split_file_drops_unreadable_classes_keeps_unlisted_ones(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    for name in ("w/d.mp4", "x/a.mp4", "z/c.mp4"):
        write_video(root / name, 4, size=(16, 16))
    (root / "y").mkdir()
    (root / "y" / "b.mp4").write_bytes(b"\x00garbage" * 50)
    split = root / "trainlist01.txt"
    split.write_text("x/a.mp4 1\ny/b.mp4 2\nz/c.mp4 3\n")  # w has a video but is not listed
    with pytest.warns(UserWarning, match=r"dropped 1 class folder.* in trainlist01.txt: y;"):
        ds = VideoFolder(root, clip_len=2, size=8, split_file=split, **plain())
    assert ds.classes == ["w", "x", "z"] and ds.targets == [1, 2] and ds.empty_classes == ["y"]


def test_prepare_ucf101_from_the_official_nested_archive(tmp_path: Path) -> None:
    archive = tmp_path / "UCF-101"
    for name in ("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "Archery/v_Archery_g02_c03.avi"):
        write_video(archive / name, 4, size=(16, 16))
    out = archive / "arranged"  # even an output folder inside the archive is not re-read
    first = prepare_ucf101(archive, out, progress=False)
    again = prepare_ucf101(archive, out, progress=False)
    assert first.classes == again.classes == ["ApplyEyeMakeup", "Archery"]
    assert first.num_videos == again.num_videos == 2 and again.unmatched == []
    assert (out / "Archery" / "v_Archery_g02_c03.avi").resolve() == (
        archive / "Archery" / "v_Archery_g02_c03.avi"
    ).resolve()


def test_prepare_hmdb51_split_lists(tmp_path: Path) -> None:
    root, splits = tmp_path / "hmdb51", tmp_path / "testTrainMulti_7030_splits"
    for name in ("brush_hair/a.avi", "brush_hair/b.avi", "ride_bike/c.avi", "ride_bike/d.avi"):
        write_video(root / name, 4, size=(16, 16))
    splits.mkdir()
    (splits / "brush_hair_test_split1.txt").write_text("a.avi 1 \nb.avi 2 \n")
    (splits / "ride_bike_test_split1.txt").write_text("c.avi 1\nd.avi 0\n\n")
    (splits / "ride_bike_test_split2.txt").write_text("c.avi 2\nd.avi 1\n")
    (splits / "README").write_text("ignored")
    written = prepare_hmdb51(splits, root)
    assert sorted(written) == ["testlist01", "testlist02", "trainlist01", "trainlist02"]
    assert written["trainlist01"].read_text() == "brush_hair/a.avi\nride_bike/c.avi\n"
    assert written["testlist01"].read_text() == "brush_hair/b.avi\n"
    assert written["trainlist02"].read_text() == "ride_bike/d.avi\n"
    train = VideoFolder(root, clip_len=2, size=8, split_file=written["trainlist01"], **plain())
    assert train.classes == ["brush_hair", "ride_bike"] and train.targets == [0, 1]

    (splits / "ride_bike_test_split3.txt").write_text("c.avi 7\n")
    with pytest.raises(ValueError, match=r"ride_bike_test_split3.txt line 1: expected"):
        prepare_hmdb51(splits, root)
    with pytest.raises(ValueError, match="no HMDB51 split file"):
        prepare_hmdb51(tmp_path / "hmdb51" / "brush_hair", root)
    with pytest.raises(FileNotFoundError, match="split_dir"):
        prepare_hmdb51(tmp_path / "nope", root)


# Issue 17: splits that overlap, repeat or hold spaces; a video two classes claim; a resolution
# change mid-stream.


def _split_pair(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for cls in ("jump", "run"):
        for name in ("a", "b"):
            write_video(root / cls / f"{cls}_{name}.mp4", 4, size=(16, 16))
    return root


def test_validation_split_overlapping_the_training_split_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stemlab.data import check_disjoint_splits

    root = _split_pair(tmp_path)
    (root / "train.txt").write_text("jump/jump_a.mp4 1\nrun/run_a.mp4 2\n")
    (root / "val.txt").write_text("jump/jump_b.mp4\nrun/run_b.mp4\n")
    (root / "leaky.txt").write_text("jump/jump_b.mp4\nrun_a.mp4\n")  # run_a by bare name
    monkeypatch.chdir(root)
    opts = {"clip_len": 2, "size": 8, **plain()}
    train = VideoFolder(root, split_file="train.txt", **opts)
    check_disjoint_splits(train, VideoFolder(root, split_file="val.txt", **opts))  # disjoint
    same = VideoFolder(root, split_file="./train.txt", **opts)  # the same file, spelled apart
    with pytest.raises(ValueError) as same_error:
        check_disjoint_splits(train, same)
    assert str(same_error.value) == (
        "val_split='train.txt' shares 2 of its 2 videos with train_split='train.txt' "
        "('jump/jump_a.mp4', 'run/run_a.mp4'): the validation split must not hold training videos"
    )
    with pytest.raises(ValueError, match=r"shares 1 of its 2 videos .*\('run/run_a.mp4'\)"):
        check_disjoint_splits(train, VideoFolder(root, split_file="leaky.txt", **opts))


def test_repeated_split_lines_are_kept_once_with_a_warning(tmp_path: Path) -> None:
    root = _split_pair(tmp_path)
    split = tmp_path / "train.txt"
    split.write_text("jump/jump_a.mp4 1\nrun/run_a.mp4 2\n./jump/jump_a.mp4 1\njump_a.mp4\n")
    with pytest.warns(UserWarning) as caught:
        ds = VideoFolder(root, clip_len=2, size=8, split_file=split, **plain())
    messages = [str(w.message) for w in caught]
    assert messages == [
        f"split_file={str(split)!r} lists 2 video(s) again ('jump/jump_a.mp4', 'jump_a.mp4'); "
        "each video is kept once"
    ]
    assert [(Path(p).name, y) for p, y in ds.samples] == [("jump_a.mp4", 0), ("run_a.mp4", 1)]


def test_split_lines_with_spaces_in_names(tmp_path: Path) -> None:
    write_video(tmp_path / "high jump" / "my clip 1.mp4", 4, size=(16, 16))
    write_video(tmp_path / "high jump" / "take 2.mp4", 4, size=(16, 16))
    write_video(tmp_path / "run" / "r.mp4", 4, size=(16, 16))
    split = tmp_path / "list.txt"
    # a path with spaces and a label; a bare name with spaces ending in a digit-like word; tabs
    split.write_text("high jump/my clip 1.mp4 1\ntake 2.mp4\nrun/r.mp4\t2\n")
    ds = VideoFolder(tmp_path, clip_len=2, size=8, split_file=split, **plain())
    assert ds.skipped == []
    assert [(Path(p).name, y) for p, y in ds.samples] == [
        ("my clip 1.mp4", 0),
        ("take 2.mp4", 0),
        ("r.mp4", 1),
    ]
    assert ds.classes == ["high jump", "run"]


def test_a_video_claimed_by_two_classes_is_refused(tmp_path: Path) -> None:
    root = _split_pair(tmp_path)
    (root / "everything").symlink_to(root, target_is_directory=True)
    with pytest.raises(ValueError) as error:
        VideoFolder(root, clip_len=2, size=8, **plain())
    message = str(error.value)
    real = str((root / "jump" / "jump_a.mp4").resolve())
    assert message.startswith(f"root={str(root)!r}: the video {real!r} is claimed by class ")
    assert "'everything'" in message and "'jump'" in message
    assert message.endswith("(is a class folder a link to the root or to another class?)")


def _transport_stream(path: Path, size: tuple[int, int], first: int, count: int) -> bytes:
    """H.264 frames ``first..first+count-1`` in an MPEG transport stream, timestamps = frame no."""
    with av.open(str(path), mode="w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 25)
        for k in range(first, first + count):
            frame = av.VideoFrame.from_ndarray(encode(k, size), format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, 25)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path.read_bytes()


def test_video_whose_resolution_changes_mid_stream_is_skipped_by_name(tmp_path: Path) -> None:
    # Two transport streams of different sizes back to back (timestamps continue): a decoder
    # sees 48x64 frames, then 32x48 frames, in one file (ffmpeg reads it whatever its suffix).
    (tmp_path / "parts").mkdir()
    head = _transport_stream(tmp_path / "parts" / "a.ts", (48, 64), 0, 10)
    tail = _transport_stream(tmp_path / "parts" / "b.ts", (32, 48), 10, 10)
    (tmp_path / "data" / "jump").mkdir(parents=True)
    changing = tmp_path / "data" / "jump" / "changing.mpg"
    changing.write_bytes(head + tail)
    write_video(tmp_path / "data" / "jump" / "steady.mp4", 8, size=(48, 64))
    ds = VideoFolder(tmp_path / "data", clip_len=4, size=16, frame_stride=5, **plain())
    assert [Path(p).name for p, _ in ds.samples] == ["changing.mpg", "steady.mp4"]
    with pytest.warns(UserWarning, match=r"cannot decode .*changing\.mpg.*frame size changes"):
        clip, label = ds[0]
    assert tuple(clip.shape) == (3, 4, 16, 16) and label == 0
    assert [Path(p).name for p, _ in ds.skipped] == ["changing.mpg"]
    reason = ds.skipped[0][1]
    assert reason.startswith("the frame size changes mid-stream (48x64 at frame ")
    assert "32x48 at frame " in reason
    with pytest.raises(DecodeError, match="frame size changes mid-stream"):
        read_frames(changing, [0, 15])
    assert read_frames(changing, [0, 5]).shape == (2, 48, 64, 3)

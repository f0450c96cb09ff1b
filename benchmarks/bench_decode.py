"""Benchmark for issue 18: can VideoFolder's PyAV decoding feed training, and what does seeking cost?

Run from the repository root::

    python benchmarks/bench_decode.py                 # about 3 minutes on 2 loaded CPU cores
    python benchmarks/bench_decode.py --videos 8 --clips 16

Writes mp4 files (H.264 via PyAV) at UCF101's resolution and rate (320x240, 25 fps, 7 s each,
the UCF101 mean length) into a temporary folder, then prints:

1. VideoFolder clips/s (UCF101 transfer settings: 16 frames at stride 2, random 112x112 crops)
   through a DataLoader with 0, 1 and 2 workers, against the training clips/s of the same
   CPU-scale model (r2plus1d_18, stages 16/32/64/128, one block each) on pre-decoded clips of
   that shape: decoding keeps up when its clips/s is above the training clips/s.
2. Seek cost on a long video (60 s): seconds to read one 16-frame clip starting at 0%, 25%,
   50%, 75% and 95% of it, for the encoder's default keyframe interval (250 frames) and for
   one keyframe a second.

Every number is wall time on this machine, shared with whatever else runs: quote it as measured
under that load.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from stemlab.data import VideoFolder
from stemlab.data.decode import probe_video, read_frames
from stemlab.models import create_model

WIDTH, HEIGHT, FPS = 320, 240, 25
CLIP = {"clip_len": 16, "frame_stride": 2, "size": 112, "sampling": "random"}
MODEL = {"widths": (16, 32, 64, 128), "layers": (1, 1, 1, 1)}


def write_video(path: Path, seconds: float, *, seed: int, keyint: int | None = None) -> None:
    """A moving-texture H.264 mp4 at 320x240, 25 fps (``keyint``: frames between keyframes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, size=(HEIGHT * 2, WIDTH * 2, 3), dtype=np.uint8)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        if keyint is not None:
            stream.options = {"g": str(keyint), "keyint_min": str(keyint)}
        for k in range(round(seconds * FPS)):
            dy, dx = (2 * k) % HEIGHT, (3 * k) % WIDTH
            frame = texture[dy : dy + HEIGHT, dx : dx + WIDTH]
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def decode_rate(root: Path, workers: int, clips: int, batch_size: int) -> tuple[float, float]:
    """``(clips/s overall, clips/s after the first batch)`` of VideoFolder through a DataLoader."""
    data = VideoFolder(root, **CLIP, progress=False)
    loader = DataLoader(
        data,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        generator=torch.Generator().manual_seed(0),
    )
    start = time.perf_counter()
    seen, first_done = 0, None
    while seen < clips:
        for batch in loader:
            seen += len(batch[0])
            if first_done is None:
                first_done, first_seen = time.perf_counter(), seen
            if seen >= clips:
                break
    end = time.perf_counter()
    steady = (seen - first_seen) / (end - first_done) if end > first_done else float("nan")
    return seen / (end - start), steady


def training_rate(batch_size: int, steps: int) -> float:
    """Training clips/s of the CPU-scale model on pre-decoded clips (AdamW, one step per batch)."""
    torch.manual_seed(0)
    model = create_model("r2plus1d_18", stem="r2plus1d", num_classes=101, **MODEL).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch_size, 3, CLIP["clip_len"], CLIP["size"], CLIP["size"])
    y = torch.randint(0, 101, (batch_size,))
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step:  # the first step warms the allocator up
            times.append(time.perf_counter() - start)
    return batch_size / statistics.median(times)


def seek_costs(path: Path, repeats: int) -> list[tuple[float, float]]:
    """``(position as a fraction, median seconds)`` of reading one clip at five positions."""
    info = probe_video(path)
    span = (CLIP["clip_len"] - 1) * CLIP["frame_stride"] + 1
    rows = []
    for fraction in (0.0, 0.25, 0.5, 0.75, 0.95):
        start = min(int(fraction * info.num_frames), info.num_frames - span)
        indices = [start + k * CLIP["frame_stride"] for k in range(CLIP["clip_len"])]
        times = []
        for _ in range(repeats):
            begin = time.perf_counter()
            read_frames(path, indices, fps=info.fps)
            times.append(time.perf_counter() - begin)
        rows.append((fraction, statistics.median(times)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=16, help="short videos (4 classes)")
    parser.add_argument("--clips", type=int, default=48, help="clips decoded per worker count")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--long-seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    threads = torch.get_num_threads()
    print(f"torch threads: {threads}; wall times under whatever load this machine carries")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "videos"
        begin = time.perf_counter()
        for i in range(args.videos):
            write_video(root / f"class{i % 4}" / f"v{i:02d}.mp4", 7.0, seed=i)
        print(
            f"wrote {args.videos} mp4s of 7 s at {WIDTH}x{HEIGHT}, {FPS} fps "
            f"in {time.perf_counter() - begin:.1f} s"
        )
        train = training_rate(args.batch_size, args.train_steps)
        print(
            f"\n1. training, r2plus1d_18 {MODEL['widths']} on [{args.batch_size}, 3, "
            f"{CLIP['clip_len']}, {CLIP['size']}, {CLIP['size']}]: {train:.2f} clips/s"
        )
        print("   workers  decode clips/s (all | after 1st batch)  decode / train")
        for workers in (0, 1, 2):
            overall, steady = decode_rate(root, workers, args.clips, args.batch_size)
            print(
                f"   {workers:7d}  {overall:14.1f} | {steady:14.1f}        {overall / train:8.1f}x"
            )
        print(f"\n2. seek cost: one clip from a {args.long_seconds:.0f} s video")
        for label, keyint in (("x264 default keyint (250)", None), ("keyframe every 1 s", FPS)):
            path = Path(tmp) / "long" / f"long_{keyint or 'default'}.mp4"
            write_video(path, args.long_seconds, seed=99, keyint=keyint)
            costs = seek_costs(path, args.repeats)
            cells = "  ".join(f"{100 * f:3.0f}%: {1e3 * s:6.1f} ms" for f, s in costs)
            print(f"   {label:26s} {cells}")


if __name__ == "__main__":
    main()

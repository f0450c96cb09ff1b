"""Every ```python block of README.md runs as pasted, in order, in one fresh interpreter."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
# Blocks that need a download (torchvision weights from the hub); the reason is reported.
NEEDS_DOWNLOAD = {'weights="KINETICS400_V1"': "downloads the torchvision Kinetics-400 weights"}

# Runs the blocks one after another in one namespace (as a reader pasting them into one session)
# and prints what the checks below read from that namespace.
_RUNNER = r"""
import json, sys
blocks = json.loads(sys.stdin.read())
ns = {"__name__": "__main__"}
for index, block in blocks:
    exec(compile(block, f"README.md python block {index}", "exec"), ns)
torch = ns["torch"]
print(json.dumps({
    "spec": [ns["name"], {k: list(v) if isinstance(v, tuple) else v for k, v in ns["kwargs"].items()}],
    "logits": list(ns["logits"].shape),
    "my_stem": "my_stem" in ns["stemlab"].list_stems(),
    "cka_rows": len(ns["probes"].cka(ns["model_a"], ns["model_b"], ns["data"])),
    "compare": ns["compare"](ns["cells"], metric="top1", by="stem", baseline="r2d")[["a", "b", "n_a", "n_b"]].values.tolist(),
    "status": ns["result"].status,
    "epochs": ns["result"].history["epoch"].tolist(),
}))
"""


def _blocks() -> list[tuple[int, str]]:
    return list(enumerate(_BLOCK.findall(README.read_text())))


def test_readme_has_the_blocks_this_test_reads() -> None:
    blocks = _blocks()
    assert len(blocks) == 5
    skipped = [i for i, block in blocks if any(marker in block for marker in NEEDS_DOWNLOAD)]
    assert skipped == [1]


def test_every_readme_python_block_runs_as_pasted() -> None:
    runnable = [(i, b) for i, b in _blocks() if not any(m in b for m in NEEDS_DOWNLOAD)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(README.parent)}
    done = subprocess.run(
        [sys.executable, "-c", _RUNNER],
        input=json.dumps(runnable),
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"a README block failed:\n{done.stderr[-3000:]}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found == {
        "spec": ["wide", {"width": 128, "kernel_size": [3, 9, 9]}],
        "logits": [1, 10],
        "my_stem": True,
        "cka_rows": found["cka_rows"],
        "compare": [["r2d", "wide", 3, 3]],
        "status": "completed",
        "epochs": [1, 2],
    }
    assert found["cka_rows"] > 0

"""The stemlab command: list, inspect, filters, one-line errors with exit status 2."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

import stemlab
from stemlab import cli
from stemlab.probes import STAT_COLUMNS

SMALL = ["--input", "1x3x4x32x32", "--num-classes", "5", "--device", "cpu"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list", "--format", "csv")
    assert code == 0
    table = pd.read_csv(io.StringIO(out), keep_default_na=False)
    assert list(table.columns) == ["registry", "name", "kind", "default_stem", "description"]
    stems = table[table["registry"] == "stem"]
    backbones = table[table["registry"] == "backbone"]
    assert stems["name"].tolist() == stemlab.list_stems()
    assert backbones["name"].tolist() == stemlab.list_backbones()
    assert set(table["kind"]) == {"video", "image"}
    assert (table["description"] != "").all()
    assert backbones.set_index("name").loc["r3d_18", "default_stem"] == "basic"
    code, out, _ = run(capsys, "list")
    assert code == 0 and "r2plus1d_18" in out and "channel_attention" in out


def test_inspect_csv_rows_and_closed_form_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "inspect", "r3d_18", *SMALL, "--format", "csv")
    assert code == 0, err
    table = pd.read_csv(io.StringIO(out))
    assert list(table.columns) == ["module", "type", "output_shape", "params", "flops"]
    model = stemlab.create_model("r3d_18", num_classes=5)
    assert table["module"].tolist() == [n for n, _ in model.named_modules() if n]
    rows = table.set_index("module")
    # stem.0: Conv3d 3->64, (3,7,7), stride (1,2,2), no bias, on 4x32x32.
    assert rows.loc["stem.0", "output_shape"] == "1x64x4x16x16"
    assert rows.loc["stem.0", "params"] == 64 * 3 * 3 * 7 * 7
    assert rows.loc["stem.0", "flops"] == (64 * 4 * 16 * 16) * (3 * 3 * 7 * 7)
    assert rows.loc["layer1.0.conv1", "type"] == "Sequential"
    assert rows.loc["fc", "output_shape"] == "1x5"
    assert rows.loc["fc", "flops"] == 512 * 5


def test_inspect_table_and_markdown_end_with_totals(capsys: pytest.CaptureFixture[str]) -> None:
    model = stemlab.create_model("r3d_18", num_classes=5)
    total_params = sum(p.numel() for p in model.parameters())
    code, out, _ = run(capsys, "inspect", "r3d_18", *SMALL)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split() == ["module", "type", "output_shape", "params", "flops"]
    assert lines[-1].split()[:4] == ["total", "VideoResNet", "1x5", f"{total_params:,}"]
    code, out, _ = run(capsys, "inspect", "r3d_18", *SMALL, "--format", "markdown")
    lines = out.strip().splitlines()
    assert lines[0] == "| module | type | output_shape | params | flops |"
    assert lines[1] == "|:---|:---|:---|---:|---:|"
    assert lines[-1].startswith(f"| total | VideoResNet | 1x5 | {total_params:,} |")


def test_inspect_json_with_stats(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "inspect", "resnet18", "--input", "2x3x32x32", "--stats",
                       "--format", "json", "--num-classes", "5")  # fmt: skip
    assert code == 0
    rows = {row["module"]: row for row in json.loads(out)}
    assert set(STAT_COLUMNS) <= set(rows["stem"])
    relu = rows["stem.2"]
    assert relu["output_shape"] == "2x64x16x16" and relu["min"] == 0.0
    assert 0.0 < relu["zero_fraction"] < 1.0
    assert relu["temporal_std"] is None  # NaN for 4-D maps


def test_filters_writes_png_and_loads_weights(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_png = tmp_path / "filters.png"
    code, out, _ = run(capsys, "filters", "r2plus1d_18", "--out", str(out_png))
    assert code == 0 and out_png.read_bytes()[:4] == b"\x89PNG"
    assert "stem.0 (45, 3, 1, 7, 7), composed (64, 3, 3, 7, 7)" in out
    checkpoint = tmp_path / "r3d.pt"
    torch.save(stemlab.create_model("r3d_18", num_classes=5).state_dict(), checkpoint)
    code, out, err = run(capsys, "filters", "r3d_18", "--num-classes", "5", "--weights",
                         str(checkpoint), "--out", str(tmp_path / "w.png"))  # fmt: skip
    assert code == 0, err
    assert "loaded" in err and (tmp_path / "w.png").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["inspect", "r3d_19"], "unknown backbone 'r3d_19'. Did you mean 'r3d_18'"),
        (["inspect", "r3d_18", "--input", "1x3x16"], "--input '1x3x16': expected"),
        (["inspect", "r3d_18", "--input", "1x3x0x8x8"], "--input '1x3x0x8x8': expected"),
        (["inspect", "r3d_18", "--stem", "wide:width=("], "stem spec 'wide:width=('"),
        (["inspect", "r3d_18", "--stem", "wde"], "unknown stem 'wde'"),
        (["inspect", "r3d_18", "--format", "xml"], "invalid choice: 'xml'"),
        (["filters", "r3d_18"], "the following arguments are required: --out"),
        (["filters", "r3d_18", "--weights", "/no/such.pt", "--out", "x.png"], "/no/such.pt"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_user_mistakes_are_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stemlab: error: ")
    assert message in lines[0]
    assert "Traceback" not in err


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "inspect" in out and "filters" in out


def test_subcommands_are_imported_directly_without_an_import_loop() -> None:
    import subprocess
    import sys

    code = "import sys, stemlab.cli_study; print('stemlab.cli' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
    assert not hasattr(cli, "SUBCOMMAND_MODULES") and not hasattr(cli, "register_subcommand")
    commands = cli.build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert list(commands) == ["list", "inspect", "filters", "channels", "study", "report"]


def test_parse_shape() -> None:
    assert cli.parse_shape("1x3x16x112x112") == (1, 3, 16, 112, 112)
    assert cli.parse_shape("2X3x224x224") == (2, 3, 224, 224)
    with pytest.raises(cli.CLIError):
        cli.parse_shape("1x3x-4x4x4")


# --- stemlab channels ---------------------------------------------------------------------------


def _checkpoint(tmp_path: Path, backbone: str, stem: str, num_classes: int) -> tuple[Path, object]:
    torch.manual_seed(7)
    model = stemlab.create_model(backbone, stem=stem, num_classes=num_classes)
    path = tmp_path / f"{backbone}.pt"
    torch.save(model.state_dict(), path)
    return path, model


def test_channels_usage_table_matches_the_probe(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from stemlab.probes.channel_usage import channel_usage

    checkpoint, model = _checkpoint(tmp_path, "resnet18", "resnet:width=12", 5)
    argv = ["channels", "resnet18", "--stem", "resnet:width=12", "--num-classes", "5"]
    code, out, err = run(capsys, *argv, "--weights", str(checkpoint), "--format", "csv")
    assert code == 0, err
    table = pd.read_csv(io.StringIO(out))
    expected = channel_usage(model)
    assert list(table.columns) == ["channel", "usage", "share"]
    assert table["channel"].tolist() == list(range(12))
    assert table["usage"].to_numpy() == pytest.approx(expected["usage"].to_numpy(), rel=1e-12)
    assert table["share"].sum() == pytest.approx(1.0)
    count = expected.attrs["channels_for_90pct"]
    assert f"{count} of 12 channels carry 90% of layer1's input weight" in err
    assert "untrained" not in err
    code, out, err = run(capsys, *argv)
    assert code == 0 and "untrained model" in err
    lines = out.strip().splitlines()
    assert lines[0].split() == ["channel", "usage", "share"] and len(lines) == 14
    assert lines[-1].endswith("channels carry 90% of layer1's input weight")


def test_channels_with_synthetic_data_adds_the_ablation(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from torch.utils.data import DataLoader

    from stemlab.data import SyntheticMotion
    from stemlab.probes.channel_ablation import channel_ablation

    checkpoint, model = _checkpoint(tmp_path, "r3d_18", "basic:width=4", 4)
    code, out, err = run(capsys, "channels", "r3d_18", "--stem", "basic:width=4",
                         "--num-classes", "4", "--weights", str(checkpoint), "--data",
                         "synthetic_motion", "--samples", "4", "--input", "2x3x4x16x16",
                         "--metric", "loss", "--format", "json", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    rows = json.loads(out)
    assert [row["channel"] for row in rows] == [0, 1, 2, 3]
    assert set(rows[0]) == {"channel", "usage", "share", "ablated", "drop"}
    data = DataLoader(SyntheticMotion(4, clip_len=4, size=16, seed=0), batch_size=2)
    expected = channel_ablation(model, data, metric="loss")
    assert [row["drop"] for row in rows] == pytest.approx(expected["drop"].tolist(), abs=1e-9)
    assert f"loss {expected['baseline'][0]:.4g} on 4 synthetic_motion (motion) clips" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", "/no/such/folder"], "--data /no/such/folder: expected 'synthetic_motion'"),
        (["--data", "synthetic_motion", "--input", "2x3x16x16"], "takes N x C x T x H x W"),
        (["--samples", "0"], "expected a positive integer"),
        (["--metric", "top5"], "invalid choice: 'top5'"),
    ],
)
def test_channels_user_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = run(capsys, "channels", "r3d_18", "--stem", "basic:width=4", *argv)
    assert code == 2 and message in err

"""The spinenet command, in-process (main(argv) -> int) and once as an installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from spinenet.cli import main


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "spinenet49 " in out and "spinenet_mobile49xs" in out
    assert main(["list", "spinenet_mobile*"]) == 0
    assert "spinenet190" not in capsys.readouterr().out


def test_summary_json_reports_official_counts(capsys):
    assert main(["summary", "spinenet49", "--size", "640", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert set(row) >= {"model", "params", "macs", "size"}
    assert row["params"] == 21_831_488
    assert row["macs"] == pytest.approx(28.262e9, rel=0.01)
    assert row["size"] == [640, 640]


def test_summary_table_and_rectangular_size(capsys):
    assert main(["summary", "spinenet49s", "spinenet_mobile49", "--size", "384x512"]) == 0
    out = capsys.readouterr().out
    assert "384x512" in out and "9,089,215" in out and "2,268,708" in out


def test_summary_of_an_architecture_file(tmp_path, capsys):
    from spinenet.specs import default_architecture

    path = tmp_path / "arch.json"
    default_architecture("resnet", "tpu").save(path)
    assert main(["summary", str(path), "--size", "640", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["params"] == 21_831_488


def test_errors_are_messages_not_tracebacks(capsys, tmp_path):
    assert main(["summary", "spinenet50"]) == 2
    assert "unknown model 'spinenet50'" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "spinenet-arch/1", "blocks": [{"level": 9}]}')
    assert main(["summary", str(bad)]) == 2
    assert "bad.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["summary", "--size", "0x5"])


def test_draw_png_and_svg(tmp_path, capsys):
    png = tmp_path / "fig" / "spinenet49.png"
    assert main(["draw", "spinenet49", "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = tmp_path / "m.svg"
    assert main(["draw", "spinenet_mobile49", "-o", str(svg)]) == 0
    assert "<svg" in svg.read_text()


def test_console_script_and_module_entry_points():
    exe = shutil.which("spinenet", path=str(__import__("pathlib").Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "spinenet"]
    result = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "summary" in result.stdout
    result = subprocess.run([sys.executable, "-m", "spinenet", "list"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "spinenet143l" in result.stdout

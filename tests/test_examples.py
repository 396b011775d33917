"""The README's `solve` and `atlas` lines run as written, on the files that ship in examples/ (issue 25 item 12)."""

from __future__ import annotations

import csv
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from netinvert.cli.main import app
from netinvert.models.load import load

ROOT = Path(__file__).resolve().parents[1]


def readme_lines(*commands: str) -> list[list[str]]:
    """The README's command-line block: the arguments of each ``netinvert COMMAND ...`` line, comments cut off."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Command line", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    lines = [shlex.split(line.split("  #", 1)[0])[1:] for line in block.splitlines() if line.startswith("netinvert ")]
    return [args for args in lines if args and args[0] in commands]


@pytest.mark.slow
def test_the_readme_solve_and_atlas_lines_run_on_the_shipped_examples(tmp_path, zoo, monkeypatch):
    zoo("moons-relu")
    zoo("digits-cnn")
    lines = readme_lines("solve", "atlas")
    assert len(lines) >= 5
    named = [arg for args in lines for arg in args if arg.startswith("examples/")]
    assert named and all((ROOT / arg).is_file() for arg in named), named
    for args in lines:
        out = args.index("-o") + 1
        args = [str(ROOT / a) if a.startswith("examples/") else a for a in args]
        args[out] = str(tmp_path / args[out])
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
    folders = {Path(a[a.index("-o") + 1]).name: a for a in lines}
    assert json.loads((tmp_path / "out" / "spec" / "result.json").read_text())["status"] == "found"
    assert json.loads((tmp_path / "out" / "spec-zoo" / "result.json").read_text())["status"] == "none-exists"
    for family in ("family", "family-2"):
        assert family in folders
        rows = list(csv.DictReader((tmp_path / "out" / family / "results.csv").open()))
        assert [(Path(r["vnnlib"]).name, r["status"]) for r in rows] == [("deep-lower.vnnlib", "none-exists"),
                                                                          ("border.vnnlib", "found")]
    assert (tmp_path / "out" / "atlas-onnx" / "layers.csv").exists()


def test_the_shipped_onnx_file_is_the_zoo_model_and_the_examples_are_small(zoo):
    """examples/make.py writes the zoo's moons-relu as ONNX: both give the same outputs."""
    sizes = {p.name: p.stat().st_size for p in (ROOT / "examples").iterdir()}
    assert {"make.py", "moons.onnx", "border.vnnlib", "deep-lower.vnnlib", "instances.csv"} <= set(sizes)
    assert sum(sizes.values()) < 16_000, sizes
    x = torch.from_numpy(np.random.default_rng(0).uniform(-2, 3, (64, 2)).astype(np.float32))
    with torch.no_grad():
        np.testing.assert_allclose(load(str(ROOT / "examples" / "moons.onnx"))(x).numpy(),
                                   zoo("moons-relu")(x).numpy(), rtol=1e-5, atol=1e-5)

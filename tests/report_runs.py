"""Result folders of every kind of run, written by the real commands with few steps (for the report tests)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from netinvert.cli.main import app
from netinvert.models.wrapper import Model

runner = CliRunner()


def invoke(*args: str) -> None:
    result = runner.invoke(app, [*args])
    assert result.exit_code == 0, result.output


def build_runs(root: Path, zoo: Callable[[str], Model], known_family: Path) -> dict[str, Path]:
    """One result folder per kind of run under ``root``, written by the real commands with few steps."""
    for name in ("digits-cnn", "roman-mlp", "dbn-digits", "moons-relu", "arm"):
        zoo(name)
    test = known_family
    folders = {kind: root / kind for kind in ("imagine", "atlas", "invert", "leakage", "solve", "family", "sample",
                                              "patterns", "draw", "layers", "warp", "preimage", "design")}
    invoke("imagine", "-m", "digits-cnn", "-t", "3", "-t", "5", "--steps", "8", "--threads", "1", "-o",
           str(folders["imagine"]))
    invoke("atlas", "-m", "digits-cnn", "-l", "conv", "--steps", "4", "--threads", "1", "-o", str(folders["atlas"]))
    invoke("invert", "-m", "digits-cnn", "-l", "pool", "--index", "3", "--method", "gradient", "--steps", "10",
           "--threads", "1", "-o", str(folders["invert"]))
    invoke("leakage", "-m", "digits-cnn", "--layers", "conv,pool", "--methods", "gradient", "--count", "1", "--steps",
           "6", "--threads", "1", "-o", str(folders["leakage"]))
    invoke("solve", str(test / "nano.onnx"), str(test / "nano.vnnlib"), "--timeout", "20", "-o",
           str(folders["solve"]))
    invoke("solve", "--instances", str(test / "instances.csv"), "--timeout", "20", "-o", str(folders["family"]))
    invoke("sample", "-m", "dbn-digits", "-t", "2", "--samples", "3", "--gibbs-steps", "10", "-o", str(folders["sample"]))
    invoke("patterns", "-m", "roman-mlp", "-l", "fc2", "-o", str(folders["patterns"]))
    invoke("draw", "-m", "moons-relu", "-o", str(folders["draw"]))
    invoke("draw", "-m", "digits-cnn", "-o", str(folders["layers"]))
    invoke("warp", "-m", "moons-relu", "-o", str(folders["warp"]))
    invoke("preimage", "-m", "moons-relu", "-t", "all", "--max-boxes", "200", "-o", str(folders["preimage"]))
    invoke("design", "-m", "arm", "--y", "1.2,0.5", "--samples", "4", "--restarts", "64", "--steps", "30", "--prove",
           "0", "--threads", "1", "-o", str(folders["design"]))
    folders["bounds"] = _bounds_folder(root / "bounds", zoo("moons-relu"))
    return folders


def _bounds_folder(out: Path, model: Model) -> Path:
    """A preimage saved from Python, with a picture of its own."""
    from netinvert.methods import invert
    from netinvert.methods.bounds import preimage_png
    from netinvert.targets.units import Class

    result = invert(model, [Class(0)], None, method="bounds", max_boxes=200)
    result.files["preimage.png"] = preimage_png(model, result, grid=60)
    result.save(out)
    return out

"""Feature inversion: the Activations target, PSNR/SSIM, gradient / decoder / hybrid methods on
digits-cnn, decoders through save/load, data sources, and the invert / leakage commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from scipy.ndimage import gaussian_filter
from typer.testing import CliRunner

from netinvert.cli.invert import invert, leakage
from netinvert.data.sources import load_source, read_input
from netinvert.ground.errors import NetinvertError
from netinvert.ground.result import Result
from netinvert.ground.spec import InputSpec
from netinvert.methods import decoder as decoder_method
from netinvert.methods import hybrid
from netinvert.methods import invert as invert_method
from netinvert.models.zoo import load_dataset
from netinvert.report.leakage import write_leakage
from netinvert.report.metrics import psnr, ssim
from netinvert.sweeps.leakage import leakage_sweep, reconstructions
from netinvert.targets.activations import Activations, capture_activations, load_activations, targets_for
from netinvert.tasks.leakage import leakage_result

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def cnn(zoo):
    return zoo("digits-cnn")


@pytest.fixture(scope="module")
def held():
    return torch.from_numpy(load_dataset("digits-cnn")[2][:8])


def _ssim_reference(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """Wang et al.'s SSIM with scipy's Gaussian filter (sigma 1.5, 11x11), valid region only."""
    f = lambda a: gaussian_filter(a, 1.5, truncate=3.5)[5:-5, 5:-5]  # noqa: E731
    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return float((((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean())


def test_psnr_and_ssim_match_definitions():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 28, 28, generator=gen, dtype=torch.float64)
    y = (x + 0.1 * torch.randn(x.shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    mse = ((x - y) ** 2).flatten(1).mean(1)
    assert torch.allclose(psnr(y, x), (10 * torch.log10(1 / mse)).float(), atol=1e-4)
    assert torch.allclose(psnr(2 * y, 2 * x, data_range=2.0), psnr(y, x), atol=1e-4)
    got = ssim(y, x)
    for i in range(3):
        assert abs(float(got[i]) - _ssim_reference(y[i, 0].numpy(), x[i, 0].numpy(), 1.0)) < 1e-5
    assert torch.allclose(ssim(x, x), torch.ones(3))
    noisier = (x + 0.3 * torch.randn(x.shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    assert float(ssim(noisier, x).mean()) < float(ssim(y, x).mean()) < 1.0
    with pytest.raises(NetinvertError, match="shapes"):
        psnr(x, x[:, :, :20])


def test_activations_target_scores_zero_at_the_original_and_checks_shapes(cnn, held, tmp_path):
    values = capture_activations(cnn, "pool", held)
    targets = targets_for(cnn, "pool", values)
    _, acts = cnn.capture(held, ("pool",))
    assert float(targets[0].objective(None, {"pool": acts["pool"][:1]})[0]) == 0.0
    other = float(targets[0].objective(None, {"pool": acts["pool"][1:2]})[0])
    expected = float(((values[1] - values[0]) ** 2).sum() / (values[0] ** 2).sum())
    assert other < 0 and other == pytest.approx(-expected, rel=1e-5)
    cos = Activations("pool", values[0], metric="cosine")
    assert abs(float(cos.objective(None, {"pool": 3.0 * acts["pool"][:1]})[0])) < 1e-6
    with pytest.raises(NetinvertError, match="unknown layer 'nope'.*conv"):
        targets_for(cnn, "nope", values)
    with pytest.raises(NetinvertError, match=r"do not fit layer 'conv'.*\(3, 24, 24\)"):
        targets_for(cnn, "conv", values)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 431), np.float32))
    with pytest.raises(NetinvertError, match=r"shape \(2, 431\).*outputs \(432,\)"):
        load_activations(str(bad), cnn, "flatten")
    good = tmp_path / "good.npy"
    np.save(good, values[:2].numpy())
    assert load_activations(str(good), cnn, "pool").shape == (2, 3, 12, 12)


@pytest.mark.slow
def test_gradient_inverts_the_first_conv_layer_far_above_the_mean_image(cnn, held):
    assert cnn.layer_depth("conv") == 1 and cnn.layer_depth("fc") == 2
    result = invert_method(cnn, targets_for(cnn, "conv", capture_activations(cnn, "conv", held)))
    mean_image = torch.from_numpy(load_dataset("digits-cnn")[0].mean(0, keepdims=True)).expand_as(held)
    baseline = float(psnr(mean_image, held).mean())
    got = float(psnr(result.inputs, held).mean())
    assert baseline < 20  # a trivial reconstruction
    assert got > 45, got  # measured about 64 dB
    assert float(ssim(result.inputs, held).mean()) > 0.99
    assert max(result.metric("activation_error")) < 1e-4


def test_decoder_round_trips_through_save_and_load(cnn, held, tmp_path):
    x_train = load_dataset("digits-cnn")[0][:256]
    dec = decoder_method.train(cnn, "pool", x_train, epochs=2, width=16)
    path = decoder_method.save(dec, tmp_path / "pool.safetensors")
    again = decoder_method.load(path)
    values = capture_activations(cnn, "pool", held)
    with torch.no_grad():
        assert torch.equal(dec(values), again(values))
    assert again.config["layer"] == "pool" and again.config["layout"] == "conv"
    result = decoder_method.run(cnn, targets_for(cnn, "pool", values), decoder=again)
    assert result.inputs.shape == held.shape and result.method == "decoder"
    with pytest.raises(NetinvertError, match="decoder given is for layer 'pool', not 'conv'"):
        decoder_method.run(cnn, targets_for(cnn, "conv", capture_activations(cnn, "conv", held)), decoder=again)
    (tmp_path / "junk.safetensors").write_bytes(b"not a decoder")
    with pytest.raises(NetinvertError, match="cannot read decoder"):
        decoder_method.load(tmp_path / "junk.safetensors")


def test_decoders_are_cached_per_model_layer_and_data(cnn, monkeypatch, tmp_path):
    monkeypatch.setenv("NETINVERT_HOME", str(tmp_path))
    split = cnn.data_split()
    small = type(split)("tiny", split.x_train[:128], split.x_held[:8])
    first = decoder_method.decoder_for(cnn, "flatten", small, epochs=1)
    files = list((tmp_path / "decoders").glob("*.safetensors"))
    assert len(files) == 1 and "digits-cnn-flatten-tiny" in files[0].name
    second = decoder_method.decoder_for(cnn, "flatten", small, epochs=1)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_leakage_falls_with_depth_and_hybrid_beats_both(cnn, tmp_path):
    split = cnn.data_split()
    folder = tmp_path / "report"
    rows = leakage_sweep(cnn, ["fc", "conv", "pool"], ["gradient", "decoder", "hybrid"], folder, data=split, count=16)
    assert [r["layer"] for r in rows[::3]] == ["conv", "pool", "fc"]
    psnr_of = {(r["layer"], r["method"]): r["psnr"] for r in rows}
    best = [max(psnr_of[(layer, m)] for m in ("gradient", "decoder", "hybrid")) for layer in ("conv", "pool", "fc")]
    assert best[0] > best[1] > best[2], best
    for layer in ("conv", "pool"):
        assert psnr_of[(layer, "hybrid")] >= max(psnr_of[(layer, "gradient")], psnr_of[(layer, "decoder")]) - 1.0
    out = write_leakage(rows, folder, leakage_result(cnn, rows, 16, {}), reconstructions(folder, rows))
    saved = json.loads((out / "leakage.json").read_text())
    assert {"layer", "method", "psnr", "ssim", "verifier_agreement", "seconds"} <= set(saved[0])
    assert (out / "psnr_vs_depth.png").stat().st_size > 1000 and (out / "leakage.md").exists()


def test_hybrid_starts_from_the_decoder_and_reduces_the_activation_error(cnn, held):
    x_train = load_dataset("digits-cnn")[0][:512]
    dec = decoder_method.train(cnn, "pool", x_train, epochs=3, width=16)
    targets = targets_for(cnn, "pool", capture_activations(cnn, "pool", held))
    first = decoder_method.run(cnn, targets, decoder=dec)
    refined = hybrid.run(cnn, targets, decoder=dec, steps=200)
    assert np.mean(refined.metric("activation_error")) < 0.2 * np.mean(first.metric("activation_error"))
    assert float(psnr(refined.inputs, held).mean()) > float(psnr(first.inputs, held).mean())


def test_sources_read_npz_and_image_folders(tmp_path):
    spec = InputSpec((1, 28, 28))
    x = (np.arange(10 * 28 * 28) % 256).astype(np.uint8).reshape(10, 28, 28)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(10))
    split = load_source(str(tmp_path / "d.npz"), spec)
    assert split.x_train.shape == (8, 1, 28, 28) and split.x_held.shape == (2, 1, 28, 28)
    assert split.x_train.max() <= 1.0 and split.y_held is not None and len(split.y_held) == 2
    assert load_source(str(tmp_path / "d.npz"), spec).key == split.key
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(np.full((56, 40, 3), 50 * i, np.uint8)).save(folder / f"{i}.png")
    imgs = load_source(str(folder), InputSpec((1, 28, 28), low=-1.0, high=1.0))
    assert imgs.x_train.shape == (4, 1, 28, 28) and imgs.x_held.shape == (1, 1, 28, 28)
    assert float(imgs.x_train.min()) == pytest.approx(-1.0)
    one = read_input(folder / "4.png", spec)
    assert one.shape == (1, 28, 28) and float(one.mean()) == pytest.approx(200 / 255, abs=1e-3)
    np.savez(tmp_path / "f.npz", x=np.full((4, 1, 28, 28), 255.0, np.float32))
    with pytest.raises(NetinvertError, match=r"values in \[255, 255\].*--input-range"):
        load_source(str(tmp_path / "f.npz"), spec)
    with pytest.raises(NetinvertError, match="not usable"):
        load_source(str(tmp_path / "missing.npz"), spec)


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("invert")(invert)
    app.command("leakage")(leakage)
    return app


def test_invert_command_writes_reconstruction_and_scores(tmp_path):
    out = tmp_path / "inv"
    res = CliRunner().invoke(_app(), ["invert", "--model", "digits-cnn", "--layer", "conv", "--index", "3",
                                      "--method", "gradient", "--steps", "300", "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "result.json").read_text())
    item = data["items"][0]
    assert item["psnr"] > 30 and item["ssim"] > 0.95 and item["verifier_agrees"] is True
    assert item["activation_error"] < 1e-3
    assert (out / "comparison.png").exists() and np.load(out / "original.npy").shape == (1, 1, 28, 28)


def test_invert_command_reports_bad_input_in_one_line(tmp_path, cnn):
    app = _app()
    res = CliRunner().invoke(app, ["invert", "--model", "digits-cnn", "--layer", "conv9", "--index", "0",
                                   "--out", str(tmp_path / "a")])
    assert res.exit_code == 2 and "unknown layer 'conv9'" in res.output
    bad = tmp_path / "acts.npy"
    np.save(bad, np.zeros((5,), np.float32))
    res = CliRunner().invoke(app, ["invert", "--model", "digits-cnn", "--layer", "pool", "--activations", str(bad),
                                   "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and "shape (5,)" in res.output and "(3, 12, 12)" in res.output
    res = CliRunner().invoke(app, ["invert", "--model", "digits-cnn", "--layer", "pool", "--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and "exactly one of --image, --index or --activations" in res.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_leakage_command_writes_table_plot_and_json(tmp_path):
    out = tmp_path / "leak"
    res = CliRunner().invoke(_app(), ["leakage", "--model", "digits-cnn", "--layers", "fc,conv", "--methods",
                                      "gradient", "--count", "3", "--steps", "60", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = json.loads((out / "leakage.json").read_text())
    assert [r["layer"] for r in rows] == ["conv", "fc"] and all(r["count"] == 3 for r in rows)
    assert rows[0]["psnr"] > rows[1]["psnr"]
    assert "| conv | 1 | gradient |" in (out / "leakage.md").read_text()
    assert (out / "psnr_vs_depth.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "reconstructions.png").read_bytes()[:4] == b"\x89PNG"
    saved = Result.load(out)
    assert saved.method == "leakage" and [i.target for i in saved.items] == ["conv / gradient", "fc / gradient"]
    assert saved.inputs.shape == (3, 1, 28, 28) and saved.items[0].metrics["psnr"] == rows[0]["psnr"]
    parts = {p.name: p.stat().st_mtime_ns for p in (out / "parts").glob("*.npz")}
    res = CliRunner().invoke(_app(), ["leakage", "--model", "digits-cnn", "--layers", "fc,conv,pool", "--methods",
                                      "gradient", "--count", "3", "--steps", "60", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert {p.name: p.stat().st_mtime_ns for p in (out / "parts").glob("*.npz") if p.name in parts} == parts
    assert [r["layer"] for r in json.loads((out / "leakage.json").read_text())] == ["conv", "pool", "fc"]
    res = CliRunner().invoke(_app(), ["leakage", "--model", "digits-cnn", "--layers", "conv", "--methods",
                                      "gradient", "--count", "4", "--out", str(out)])
    assert res.exit_code == 2 and "made with other options" in " ".join(res.output.split())
    res = CliRunner().invoke(_app(), ["leakage", "--model", "digits-cnn", "--layers", "conv", "--methods", "magic",
                                      "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "unknown inversion method 'magic'" in res.output

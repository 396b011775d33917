"""Realism metrics (verifier agreement, Frechet distance with its floor and ceiling, diversity) and the priors
that make imagined images look like data (the learned VAE prior, the phase-only MACO parameterization)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from netinvert import Class, Domain, invert
from netinvert.cli.main import app
from netinvert.domains import generative
from netinvert.domains.maco import Maco
from netinvert.ground.errors import NetinvertError
from netinvert.ground.result import Result
from netinvert.ground.spec import InputSpec
from netinvert.report.realism import frechet_distance, mean_pairwise, realism
from netinvert.targets.scoring import score


def _held_result(model, per_class: int, inputs=None) -> Result:  # type: ignore[no-untyped-def]
    """``per_class`` held-out images of every digit (or ``inputs`` in their place), scored as class items."""
    split = model.data_split()
    rows = np.concatenate([np.where(split.y_held == k)[0][:per_class] for k in range(10)])
    x = torch.tensor(split.x_held[rows]) if inputs is None else inputs(len(rows))
    targets = [Class(int(k)) for k in split.y_held[rows]]
    outputs, items = score(model, targets, x)
    return Result("test", model.name, x, outputs, items)


def test_frechet_distance_of_a_shift_is_its_squared_length():
    a = np.random.default_rng(0).normal(size=(4000, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + 3.0) == pytest.approx(36.0, rel=1e-6)  # same covariance: |mu shift|^2
    wider = frechet_distance(a, 2.0 * a)  # tr(S) + tr(4S) - 2 tr(2S) = tr(S) ~ 4
    assert wider == pytest.approx(4.0, rel=0.1)


def test_diversity_is_zero_for_copies_and_positive_for_distinct_items():
    f = np.random.default_rng(1).normal(size=(5, 8))
    assert mean_pairwise(np.repeat(f[:1], 4, axis=0)) == pytest.approx(0.0)
    assert mean_pairwise(f) > 1.0
    assert mean_pairwise(f[:1]) is None


def test_real_data_scores_at_the_floor_and_noise_at_the_ceiling(zoo):
    model = zoo("digits-cnn")
    real = realism(model, _held_result(model, 4))
    noise = realism(model, _held_result(model, 4, lambda n: torch.rand((n, 1, 28, 28),
                                                                     generator=torch.Generator().manual_seed(3))))
    assert real is not None and noise is not None
    assert real["frechet_floor"] == noise["frechet_floor"] and real["frechet_ceiling"] == noise["frechet_ceiling"]
    assert real["frechet_floor"] < 0.2 * real["frechet_ceiling"]
    assert real["gap_closed"] > 0.9 and real["frechet_ratio"] < 1.5
    assert abs(noise["gap_closed"]) < 0.1
    assert real["verifier_agreement"] >= 0.9 and noise["verifier_agreement"] <= 0.3
    assert real["diversity"] > 0.5 * real["diversity_real"]  # four real digits per class differ like real ones


def test_copies_have_zero_diversity(zoo):
    model = zoo("digits-cnn")
    one = _held_result(model, 1)
    copies = Result("test", model.name, one.inputs.repeat_interleave(3, 0), one.outputs.repeat_interleave(3, 0),
                    [item for item in one.items for _ in range(3)])
    assert realism(model, copies)["diversity"] == pytest.approx(0.0, abs=1e-9)


def test_realism_needs_a_verifier_and_labelled_data(zoo):
    model = zoo("digits-cnn")
    result = _held_result(model, 1)
    verifier, model.verifier = model.verifier, None
    try:
        assert realism(model, result) is None
    finally:
        model.verifier = verifier


def test_imagine_prints_and_saves_realism(tmp_path):
    out = tmp_path / "out"
    run = CliRunner().invoke(app, ["imagine", "-m", "digits-cnn", "-t", "3", "-t", "7", "--steps", "16",
                                   "--param", "pixel", "--threads", "1", "-o", str(out)])
    assert run.exit_code == 0, run.output
    assert "realism (verifier digits-verifier, 2 items)" in run.output
    saved = Result.load(out)
    assert saved.info["realism"]["frechet_ceiling"] > saved.info["realism"]["frechet_floor"] > 0


def test_maco_keeps_the_magnitude_and_optimizes_the_phase():
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    low, high = torch.zeros(3, 16, 16), torch.ones(3, 16, 16)
    param = Maco(2, (3, 16, 16), low, high, gens)
    x = param().detach()
    assert x.shape == (2, 3, 16, 16) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert [name for name, _ in param.named_parameters()] == ["phase"]
    logits = torch.log(x) - torch.log1p(-x)
    magnitude = torch.fft.rfft2(logits, norm="ortho").abs()[..., 1:-1]  # the columns whose phase is free
    assert torch.allclose(magnitude[0], magnitude[1], atol=1e-3)  # both items: the same fixed spectrum
    assert not torch.allclose(x[0], x[1])


def test_maco_refuses_an_initial_input():
    with pytest.raises(NetinvertError, match="maco"):
        Domain(param="maco", init=torch.zeros(1, 3, 8, 8)).parameterize(InputSpec((3, 8, 8)), 1, torch.Generator())


@pytest.mark.slow
def test_learned_prior_lowers_the_frechet_distance_on_the_digits(zoo):
    """The VAE prior (trained on first use, cached under NETINVERT_HOME/priors) beats the Gaussian data prior."""
    model = zoo("digits-cnn")
    targets = [Class(k) for k in range(10)]
    runs = {param: invert(model, targets, Domain(param=param, data_prior=None if param == "pixel" else 0.0),
                          steps=128, samples=2, threads=1, progress=False) for param in ("pixel", "latent")}
    gaussian, learned = (realism(model, runs[p]) for p in ("pixel", "latent"))
    assert learned["frechet"] < 0.7 * gaussian["frechet"]
    assert learned["gap_closed"] > gaussian["gap_closed"]
    assert generative.cache_path("digits", (1, 28, 28), 0.0, 1.0).exists()


@pytest.mark.slow
def test_the_learned_prior_is_the_default_for_class_targets_only(zoo):
    from netinvert.targets.units import Channel

    model = zoo("digits-cnn")
    classes = invert(model, [Class(3)], Domain(), steps=8, threads=1, progress=False)
    units = invert(model, [Channel("conv", 0)], Domain(), steps=8, threads=1, progress=False)
    assert classes.info["options"]["param"] == "latent"
    assert units.info["options"]["param"] == "pixel"
    assert classes.statuses == ["found"]  # the pixel nudge reaches the goal even after only 8 latent steps

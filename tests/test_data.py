"""Reading a user's input files: bit depth and channel conversions are honoured and said."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from netinvert.data.sources import read_input
from netinvert.ground.spec import InputSpec

GRAY = InputSpec((1, 28, 28))


def test_a_16_bit_png_spans_the_range_instead_of_saturating(tmp_path):
    ramp = np.linspace(0, 65535, 28 * 28).reshape(28, 28).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    x = read_input(tmp_path / "deep.png", GRAY)
    assert x.min() == 0.0 and x.max() == pytest.approx(1.0)
    assert x.mean() == pytest.approx(0.5, abs=1e-3)


def test_an_8_bit_png_in_a_0_255_model_keeps_its_values(tmp_path):
    ramp = np.arange(28 * 28).reshape(28, 28) % 256
    Image.fromarray(ramp.astype(np.uint8)).save(tmp_path / "plain.png")
    x = read_input(tmp_path / "plain.png", InputSpec((1, 28, 28), 0.0, 255.0))
    assert np.array_equal(x[0], ramp.astype(np.float32))


def test_colour_and_alpha_conversions_are_said(tmp_path, caplog):
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 255
    Image.fromarray(rgba).save(tmp_path / "red.png")
    with caplog.at_level(logging.WARNING, logger="netinvert"):
        gray = read_input(tmp_path / "red.png", GRAY)
        colour = read_input(tmp_path / "red.png", InputSpec((3, 28, 28)))
    said = " | ".join(r.getMessage() for r in caplog.records)
    assert "RGBA converted to gray" in said and "alpha dropped" in said and "resized from 32x32" in said
    assert gray.max() == pytest.approx(76 / 255, abs=0.01)
    assert colour[0].min() == 1.0 and colour[1].max() == 0.0

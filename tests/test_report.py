"""report.html for every kind of run, the index page, Result._repr_html_, and the draw / warp pictures.

The folders come from the real commands with few steps (one module-scoped build); each page is parsed
with html.parser: every <img> must hold a PNG in a data: URI, nothing may point at the network, and the
figures that answer "did it work, how well" must appear. ``tests/external/test_report_browser.py`` opens the
pages in headless Chromium and checks that every image loaded.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from report_runs import build_runs, invoke, runner
from torch import nn

from netinvert.cli.main import app
from netinvert.ground.page import fmt
from netinvert.ground.result import Item, Result
from netinvert.ground.spec import InputSpec
from netinvert.models.wrapper import Model


class _Page(HTMLParser):
    """Every tag's attributes and the visible text of one page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.links: list[str] = []
        self.ids: list[str] = []
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        if tag == "img":
            self.images.append(values)
        for key in ("href", "src", "action"):
            if key in values and tag != "img":
                self.links.append(values[key])
        if "id" in values:
            self.ids.append(values["id"])

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> tuple[_Page, str]:
    """Parse a page and check what every page must satisfy; returns the parser and its visible text."""
    page = _Page()
    page.feed(html)
    page.close()
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:|//)", html), "a page must not load anything remotely"
    assert "<script" not in html
    for image in page.images:
        src = image["src"]
        assert src.startswith("data:image/png;base64,"), src[:40]
        picture = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        picture.load()
        assert picture.format == "PNG" and picture.width > 8 and picture.height > 8
        assert image.get("alt"), "every picture has an alt text"
    for link in page.links:
        assert link.startswith("#") and link[1:] in page.ids, f"link {link} points to no anchor on the page"
    return page, " ".join(" ".join(page.text).split())


@pytest.fixture(scope="module")
def runs(tmp_path_factory, zoo, known_family) -> dict[str, Path]:
    """One result folder per kind of run, written by the real commands with few steps."""
    return build_runs(tmp_path_factory.mktemp("runs"), zoo, known_family)


def page_of(folder: Path) -> tuple[_Page, str]:
    html = (folder / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "</html>" in html
    return parse(html)


@pytest.mark.slow
def test_every_command_writes_a_readable_page_with_its_footer(runs):
    for kind, folder in runs.items():
        _, text = page_of(folder)
        assert "netinvert" in text and "torch" in text and "CPUs" in text, kind
        if kind != "bounds":
            assert "command:" in text, kind
        if (folder / "result.json").exists() and kind not in ("bounds",):
            recorded = json.loads((folder / "result.json").read_text())
            assert isinstance(recorded["command"], list) and recorded["environment"]["cpus"] >= 1, kind


def test_imagine_page_shows_grid_items_scores_curve_and_options(runs):
    data = json.loads((runs["imagine"] / "result.json").read_text())
    page, text = page_of(runs["imagine"])
    alts = [image["alt"] for image in page.images]
    assert "contact sheet of the inputs found" in alts and "objective per step" in alts
    assert alts.count("class 3") == 1 and alts.count("class 5") == 1
    for item in data["items"]:
        assert item["target"] in text and fmt(item["model_prob"]) in text and fmt(item["verifier_prob"]) in text
    assert "model prob" in text and "verifier prob" in text and "options (to rerun)" in text
    assert "seed" in text and f"{data['options']['lr']}" in text


def test_atlas_page_has_the_sheet_and_an_anchor_per_unit(runs):
    page, text = page_of(runs["atlas"])
    assert [f"unit-{i}" for i in range(3)] == [i for i in page.ids if i.startswith("unit-")]
    assert sorted(page.links) == ["#unit-0", "#unit-1", "#unit-2"]
    assert "atlas contact sheet" in [image["alt"] for image in page.images]
    assert len(page.images) == 4 and "3 channels of layer conv" in text


def test_invert_and_leakage_pages_show_quality(runs):
    data = json.loads((runs["invert"] / "result.json").read_text())
    page, text = page_of(runs["invert"])
    assert "original and reconstruction" in [image["alt"] for image in page.images]
    assert "PSNR dB" in text and fmt(data["items"][0]["psnr"]) in text and fmt(data["items"][0]["ssim"]) in text
    rows = json.loads((runs["leakage"] / "leakage.json").read_text())
    page, text = page_of(runs["leakage"])
    assert [image["alt"] for image in page.images] == ["PSNR against layer depth", "reconstructions"]
    assert [fmt(row["psnr"]) in text for row in rows] == [True, True] and "conv" in text and "pool" in text


def test_solve_pages_give_the_verdicts_and_every_counterexample_rechecked(runs):
    _, text = page_of(runs["solve"])
    assert "none-exists" in text and "nano.onnx" in text and "bound statistics per case" in text
    with (runs["family"] / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    page, text = page_of(runs["family"])
    found = [r for r in rows if r["status"] == "found"]
    assert found, "the test family holds a satisfiable instance"
    assert f"{len(rows)} instances" in text and text.count("largest |f(x) - Y|") == len(found)
    assert "unstable ReLUs (CROWN / all)" in text and re.search(r"\b\d+/40\b", text), "bound statistics per instance"
    recheck = float(re.search(r"largest \|f\(x\) - Y\| = ([0-9.e+-]+)", text).group(1))
    assert recheck < 1e-4
    assert "(X_0" in text and len([link for link in page.links if link.endswith("cex")]) == len(found)


def test_sample_patterns_bounds_draw_and_warp_pages(runs):
    page, text = page_of(runs["sample"])
    assert "3 items" in text and "found" in text
    page, text = page_of(runs["patterns"])
    assert len([i for i in page.ids if i.startswith("unit-")]) == 25 and len(page.images) == 26
    page, text = page_of(runs["bounds"])
    assert "preimage" in [image["alt"] for image in page.images] and "fraction under" in text
    for kind, picture in (("draw", "network"), ("layers", "network"), ("warp", "warp")):
        page, text = page_of(runs[kind])
        assert [image["alt"] for image in page.images] == [picture], kind
    assert "node-link" in page_of(runs["draw"])[1] and "layers" in page_of(runs["layers"])[1]
    assert "pca variance kept" in page_of(runs["warp"])[1]


def test_report_command_gathers_runs_into_one_page(runs, tmp_path):
    out = tmp_path / "index.html"
    invoke("report", str(runs["imagine"]), str(runs["atlas"]), str(runs["family"]), "-o", str(out))
    page, text = parse(out.read_text())
    assert {"r0", "r1", "r2"} <= set(page.ids) and "3 runs" in text
    assert {"r1-unit-0", "r1-unit-2"} <= set(page.ids), "anchors of each run are kept apart"
    bad = runner.invoke(app, ["report", str(tmp_path / "nothing-here")])
    assert bad.exit_code == 2 and "is not a folder" in bad.output


def _tiny_result(history: bool) -> Result:
    torch.manual_seed(0)
    inputs = torch.rand(3, 1, 8, 8)
    items = [Item(f"class {k}", "found" if k else "not-reached", metrics={"model_prob": 0.25 * (k + 1)})
             for k in range(3)]
    steps = {"objective": [[float(s), float(2 * s), float(3 * s)] for s in range(5)]} if history else {}
    return Result("gradient", "tiny", inputs, torch.rand(3, 4), items, history=steps, info={"options": {"seed": 7}})


def test_result_shows_itself_in_a_notebook(tmp_path):
    result = _tiny_result(history=True)
    fragment = result._repr_html_()
    assert not fragment.startswith("<!DOCTYPE") and fragment.startswith('<div class="ni">')
    page, text = parse(fragment)
    assert [image["alt"] for image in page.images] == ["contact sheet of the inputs found", "objective per step"]
    assert "2 found" in text and "1 not-reached" in text and "0.75" in text and "seed 7" in text
    result.save(tmp_path / "r")
    assert Result.load(tmp_path / "r")._repr_html_().count("<img") == 2
    flat = Result("exact", "flat", torch.zeros(1, 5), torch.zeros(1, 2), [Item("p", "none-exists")])
    page, text = parse(flat._repr_html_())
    assert page.images == [] and "none-exists" in text


def test_draw_small_net_is_node_link_and_large_net_is_layers(tmp_path, zoo):
    from netinvert.report.draw import dense_layers, draw

    torch.manual_seed(0)
    small = Model(nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)), InputSpec((4,), low=-1.0, high=1.0),
                  name="r4-r2", output_activation="none")
    chain = dense_layers(small)
    assert [d.weight.shape for d in chain] == [(3, 4), (2, 3)] and chain[0].activation == "Tanh"
    drawn = draw(small, tmp_path / "small.png")
    assert drawn["diagram"] == "node-link" and [r["parameters"] for r in drawn["layers"]] == [15, 0, 8]
    picture = np.asarray(Image.open(tmp_path / "small.png").convert("RGB")).astype(int)
    red = (picture[..., 0] > 150) & (picture[..., 1] < 120) & (picture[..., 2] < 120)
    blue = (picture[..., 2] > 150) & (picture[..., 0] < 120)
    assert red.sum() > 50 and blue.sum() > 50, "edges of both signs are drawn"
    assert draw(zoo("digits-cnn"), tmp_path / "cnn.png")["diagram"] == "layers"
    assert [r["layer"] for r in draw(zoo("digits-cnn"), tmp_path / "cnn.png")["layers"]] == \
        ["conv", "relu", "pool", "flatten", "fc"]


def test_warp_has_one_panel_per_flat_layer_and_refuses_other_inputs(tmp_path, zoo):
    from netinvert.ground.errors import NetinvertError
    from netinvert.report.warp import warp

    shown = warp(zoo("moons-relu"), tmp_path / "warp.png")
    assert [p["panel"] for p in shown["layers"]] == ["input", "fc1 (16)", "act1 (16)", "fc2 (16)", "act2 (16)",
                                                     "fc3 (2)"]
    kept = [p["pca_variance_kept"] for p in shown["layers"]]
    assert kept[0] == kept[1] == kept[-1] == 1.0 and all(0.3 < k <= 1.0 for k in kept)
    picture = Image.open(tmp_path / "warp.png")
    assert picture.width > 5 * picture.height
    with pytest.raises(NetinvertError, match="two inputs"):
        warp(zoo("digits-cnn"), tmp_path / "no.png")
    assert not (tmp_path / "no.png").exists()


KINDS = {"imagine": "imagine", "atlas": "atlas", "invert": "invert", "leakage": "leakage", "solve": "solve",
         "family": "solve-family", "sample": "sample", "patterns": "patterns", "draw": "draw", "layers": "draw",
         "warp": "warp", "preimage": "preimage", "design": "design", "bounds": "preimage"}


def test_every_folder_a_command_writes_reopens_as_its_kind_of_run(runs):
    assert set(runs) == set(KINDS)
    for name, folder in runs.items():
        result = Result.load(folder)
        assert result.kind == KINDS[name] == json.loads((folder / "result.json").read_text())["kind"], name
        assert all((folder / file).read_bytes() == content for file, content in result.files.items()), name
    drawn = Result.load(runs["draw"])
    assert drawn.info["diagram"] == "node-link" and drawn.files["network.png"][:4] == b"\x89PNG"
    assert [row["panel"] for row in Result.load(runs["warp"]).info["layers"]][:2] == ["input", "fc1 (16)"]
    with (runs["family"] / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    family = Result.load(runs["family"])
    assert family.statuses == [row["status"] for row in rows] and len(rows) >= 2
    assert Result.load(runs["solve"]).statuses == ["none-exists"]
    assert sorted(Result.load(runs["design"]).files) == ["arm_poses.png"]
    assert sorted(Result.load(runs["preimage"]).files) == ["preimage_00.png", "preimage_01.png"]
    before = (runs["draw"] / "result.json").read_bytes()
    invoke("report", str(runs["draw"]))
    assert (runs["draw"] / "result.json").read_bytes() == before, "drawing the page again leaves the result alone"
    assert Result.load(runs["draw"]).kind == "draw"


def test_a_folder_of_an_unknown_schema_is_refused_in_one_line(tmp_path):
    from netinvert.ground.errors import NetinvertError

    folder = _tiny_result(history=False).save(tmp_path / "r")
    data = json.loads((folder / "result.json").read_text())
    (folder / "result.json").write_text(json.dumps({**data, "schema": 99}))
    with pytest.raises(NetinvertError, match="has schema 99, and this netinvert reads schema 1, 2"):
        Result.load(folder)
    bad = runner.invoke(app, ["report", str(folder)])
    assert bad.exit_code == 2 and "schema 99" in bad.output and len(bad.output.strip().splitlines()) == 1


def test_a_notebook_shows_the_pictures_of_the_page(runs):
    for name, folder in runs.items():
        page, _ = page_of(folder)
        result = Result.load(folder)
        shown, _ = parse(result._repr_html_())
        pictures = [image["alt"] for image in page.images]
        if name in ("imagine", "sample", "invert"):  # the page's item table has a thumbnail column, the notebook's not
            pictures = [alt for alt in pictures if alt not in {item.target for item in result.items}]
        assert [image["alt"] for image in shown.images] == pictures, name
    design = [image["alt"] for image in parse(Result.load(runs["design"])._repr_html_())[0].images]
    assert design[0] == "r_T curve" and "arm_poses" in design


def test_a_page_that_cannot_be_drawn_costs_only_the_page(tmp_path, monkeypatch):
    from netinvert.ground import views

    def broken(result, name=""):
        raise RuntimeError("no page")

    monkeypatch.setattr(views, "page_html", broken)
    folder = _tiny_result(history=True).save(tmp_path / "r")
    assert not (folder / "report.html").exists()
    saved = Result.load(folder)
    assert saved.metric("model_prob") == [0.25, 0.5, 0.75] and saved.inputs.shape == (3, 1, 8, 8)
    assert saved.info["notes"] == ["report.html not written (RuntimeError: no page); try `netinvert report` on the "
                                   "folder"]


def test_a_python_run_finished_by_the_library_gives_the_folder_of_the_command(tmp_path, zoo):
    from netinvert import Class, Domain, invert
    from netinvert.report.finish import finish

    model = zoo("digits-cnn")
    invoke("imagine", "-m", "digits-cnn", "-t", "3", "--steps", "8", "--threads", "1", "-o", str(tmp_path / "cli"))
    result = invert(model, [Class(3)], Domain(), method="gradient", steps=8, threads=1)
    finish(result, tmp_path / "py", model)
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == sorted(p.name for p in (tmp_path / "py").iterdir())
    cli, py = (json.loads((tmp_path / run / "result.json").read_text()) for run in ("cli", "py"))
    for data in (cli, py):
        del data["timing"]
    assert isinstance(cli.pop("command"), list) and "command" not in py
    assert cli == py and cli["kind"] == "imagine" and cli["realism"]["frechet_ceiling"] > cli["realism"]["frechet"]
    assert np.array_equal(np.load(tmp_path / "cli" / "inputs.npy"), np.load(tmp_path / "py" / "inputs.npy"))


def test_a_score_that_fails_after_the_work_is_one_line_and_the_run_is_saved(tmp_path, zoo, monkeypatch):
    from netinvert.report import realism

    def broken(model, result, seed=0):
        raise ValueError("max() arg is an empty sequence")

    monkeypatch.setattr(realism, "realism", broken)
    zoo("digits-cnn")
    out = tmp_path / "run"
    run = runner.invoke(app, ["imagine", "-m", "digits-cnn", "-t", "3", "--steps", "8", "--threads", "1", "-o",
                              str(out)])
    assert run.exit_code == 0, run.output
    note = "realism not added (ValueError: max() arg is an empty sequence)"
    assert [line for line in run.output.splitlines() if "realism" in line] == \
        [f"warning: {note}; the result is saved without it"]
    saved = Result.load(out)
    assert saved.items[0].target == "class 3" and saved.inputs.shape == (1, 1, 28, 28)
    assert saved.info["notes"] == [note] and "realism" not in saved.info
    assert f"note: {note}" in page_of(out)[1]


def test_imagine_with_an_onnx_verifier_keeps_its_run(tmp_path, zoo):
    model = zoo("digits-mlp")
    verifier = tmp_path / "verifier.onnx"
    torch.onnx.export(model.verifier.module.eval(), torch.zeros(1, *model.input_spec.shape), str(verifier),
                      dynamo=False)
    out = tmp_path / "run"
    run = runner.invoke(app, ["imagine", "-m", "digits-mlp", "-t", "3", "--steps", "8", "--threads", "1",
                              "--verifier", str(verifier), "-o", str(out)])
    assert run.exit_code == 0, run.output
    saved = Result.load(out)
    assert saved.items[0].metrics["verifier_prob"] is not None
    assert "realism" in saved.info or any("realism not added" in note for note in saved.info["notes"])


def _text_clashes(fig) -> list[str]:
    """The texts of a figure that do not lie wholly inside it or that overlap another text."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # lays the figure out as saving it does
    renderer = canvas.get_renderer()
    width, height = fig.bbox.width, fig.bbox.height
    drawn = [*fig.texts, *(t for ax in fig.axes for t in (*ax.texts, ax.title))]
    texts = [(t.get_text(), t.get_window_extent(renderer)) for t in drawn if t.get_text()]
    clashes = []
    for n, (text, box) in enumerate(texts):
        if not (box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height):
            clashes.append(f"{text} (outside)")
        clashes += [f"{text} over {other}" for other, box2 in texts[n + 1:] if box.overlaps(box2)]
    return clashes


class _Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.convolution_with_a_long_descriptive_name = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.convolution_with_a_long_descriptive_name(x))


def test_draw_keeps_long_names_whole_and_shows_skip_connections(tmp_path):
    from collections import OrderedDict

    from netinvert.report.draw import dense_layers, draw_result, flow, layer_figure, node_link_figure

    torch.manual_seed(0)
    residual = Model(nn.Sequential(OrderedDict([("stem", nn.Conv2d(1, 4, 3, padding=1)),
                                                ("first_residual_block_of_the_image_encoder_stack", _Block(4)),
                                                ("second", _Block(4)), ("flat", nn.Flatten()),
                                                ("head", nn.Linear(4 * 8 * 8, 3))])),
                     InputSpec((1, 8, 8)), name="tiny-resnet")
    drawn = draw_result(residual)
    assert drawn.info["skips"] == [["stem", "add"], ["first_residual_block_of_the_image_encoder_stack.act", "add"]]
    assert _text_clashes(layer_figure(residual, flow(residual))) == []
    path = tmp_path / "res.onnx"
    torch.onnx.export(residual.module.eval(), torch.zeros(1, 1, 8, 8), str(path), dynamo=False)
    from netinvert.models.load import load

    assert len(draw_result(load(str(path))).info["skips"]) == 2, "an ONNX graph shows its skips too"
    wide = Model(nn.Sequential(OrderedDict([("an_input_projection_with_a_very_long_name", nn.Linear(3, 4)),
                                            ("act", nn.Tanh()),
                                            ("the_output_readout_named_at_some_length", nn.Linear(4, 2))])),
                 InputSpec((3,), low=-1.0, high=1.0), name="long-names", output_activation="none")
    assert _text_clashes(node_link_figure(wide, dense_layers(wide))) == []


@pytest.mark.slow
def test_warp_of_a_regression_network_shows_its_output_value(zoo):
    from netinvert.report.warp import warp_result

    shown = warp_result(zoo("sine"))
    low, high = shown.info["output_range"]
    assert shown.info["colour"] == "output y0" and low < -2 and high > 2
    assert warp_result(zoo("moons-relu")).info["colour"] == "predicted class"

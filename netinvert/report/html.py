"""``report.html``: one self-contained page per saved result folder, and an index over several.

The page is driven only by what the folder holds (``result.json`` and its ``method``, the PNGs,
``inputs.npy``, ``leakage.json``, ``results.csv``, ``counterexample.txt``, ``units/``), so a folder
written by any command, or an older one, renders with ``netinvert report DIR``. Each kind of run gets
the view that answers "did it work, how well, how do I rerun it": the grid and per-item scores for
imagine / sample, the contact sheet with an anchor per unit for atlas, original beside reconstruction
for invert, PSNR/SSIM against depth for leakage, a VNN-COMP table with every counterexample for solve,
the certified boxes for bounds, and the pictures of draw / warp. The building blocks live in
:mod:`netinvert.ground.page`, which also renders in-memory results for notebooks.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from netinvert.ground.errors import NetinvertError
from netinvert.ground.output import write_json, write_text
from netinvert.ground.page import (
    curve_png,
    document,
    environment,
    esc,
    footer,
    img,
    key_values,
    result_section,
    section,
    status_html,
    status_summary,
    summary_line,
    table,
)
from netinvert.ground.result import Result

REPORT = "report.html"
KINDS = ("leakage", "solve-family", "solve", "atlas", "patterns", "bounds", "design", "invert", "pictures", "result")
WIDE = 1400
"""Pictures wider than this (pixels) keep their size and scroll sideways instead of shrinking (the warp strip)."""
_SHOWN_ELSEWHERE = re.compile(r"^(item_\d+.*|grid|atlas|sheet|comparison|psnr_vs_depth)\.png$")


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _png(path: Path) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if data.startswith(b"\x89PNG") else None


def kind_of(folder: Path) -> str:
    """Which view a folder gets, from the files it holds (one of ``KINDS``)."""
    data = _json(folder / "result.json")
    data = data if isinstance(data, dict) else {}
    method = data.get("method")
    if (folder / "leakage.json").exists():
        return "leakage"
    if (folder / "results.csv").exists():
        return "solve-family"
    if method == "exact":
        return "solve"
    if "atlas" in data:
        return "atlas"
    if method == "patterns" or (method is None and "layer" in data and (folder / "patterns.npy").exists()):
        return "patterns"
    if method == "bounds":
        return "bounds"
    if method == "adjoint":
        return "design"
    if method in ("draw", "warp"):
        return "pictures"
    if (folder / "original.npy").exists() or (folder / "comparison.png").exists():
        return "invert"
    if data:
        return "result"
    raise NetinvertError(f"{folder} holds no netinvert result (no result.json, leakage.json or results.csv); "
                         "give a folder that a netinvert command wrote")


def _load(folder: Path) -> Result | None:
    if not (folder / "inputs.npy").exists():
        return None
    return Result.load(folder)


def _other_pictures(folder: Path, used: Sequence[str] = ()) -> str:
    """Every top-level PNG the kind's view did not already show."""
    parts = []
    for path in sorted(folder.glob("*.png")):
        if path.name in used or _SHOWN_ELSEWHERE.match(path.name):
            continue
        png = _png(path)
        if png is not None:
            wide = ' class="wide"' if int.from_bytes(png[16:20], "big") > WIDE else ""
            parts.append(f"<figure{wide}>{img(png, path.stem)}<figcaption>{esc(path.name)}</figcaption></figure>")
    return section("pictures", "".join(parts), level=3) if parts else ""


def _result_view(folder: Path, anchor: str) -> str:
    result = _load(folder)
    if result is None:
        return _pictures_view(folder, anchor)
    return result_section(result, grid=_png(folder / "grid.png")) + _other_pictures(folder)


def _design_view(folder: Path, anchor: str) -> str:
    """Inverse design: the r_T curve (best re-simulated error among the first T solutions), the solutions and
    their pictures (arm poses, the level set of a 2-input network)."""
    result = _load(folder)
    if result is None:
        return _pictures_view(folder, anchor)
    parts = []
    curve = result.info.get("r_curve")
    png = curve_png({"r_T (mean over targets)": curve}, xlabel="T (solutions proposed)") if curve else None
    if png is not None:
        parts.append(section("r_T: best re-simulated MSE among the first T solutions", img(png, "r_T curve"),
                             level=3))
    return "".join(parts) + result_section(result) + _other_pictures(folder)


def _invert_view(folder: Path, anchor: str) -> str:
    result = _load(folder)
    parts = []
    pair = _png(folder / "comparison.png")
    if pair is not None:
        parts.append(section("original beside reconstruction", img(pair, "original and reconstruction"), level=3))
    if result is not None:
        rows = [(i, item.metrics.get("psnr"), item.metrics.get("ssim"), item.metrics.get("activation_error"),
                 item.metrics.get("verifier_agreement")) for i, item in enumerate(result.items)]
        parts.append(section("reconstruction quality",
                             table(["item", "PSNR dB", "SSIM", "activation error", "verifier agrees"], rows), level=3))
        layer = result.info.get("layer")
        parts.insert(0, f"<p>reconstructed from the activations of layer <b>{esc(layer)}</b></p>" if layer else "")
        parts.append(result_section(result, grid=_png(folder / "grid.png")))
    return "".join(parts) + _other_pictures(folder)


def _leakage_view(folder: Path, anchor: str) -> str:
    rows = _json(folder / "leakage.json")
    rows = rows if isinstance(rows, list) else []
    parts = []
    plot = _png(folder / "psnr_vs_depth.png")
    if plot is not None:
        parts.append(section("PSNR against depth", img(plot, "PSNR against layer depth"), level=3))
    header = ["layer", "depth", "method", "PSNR dB", "SSIM", "verifier agreement", "activation error", "seconds",
              "inputs"]
    keys = ["layer", "depth", "method", "psnr", "ssim", "verifier_agreement", "activation_error", "seconds", "count"]
    body = table(header, [[row.get(k) for k in keys] for row in rows if isinstance(row, dict)])
    parts.append(section("PSNR / SSIM per layer and method", body, level=3))
    parts.append("<p>Higher PSNR and SSIM mean the layer's activations give its input away more completely.</p>")
    return "".join(parts) + _other_pictures(folder)


def _atlas_view(folder: Path, anchor: str) -> str:
    result = _load(folder)
    if result is None:
        return _pictures_view(folder, anchor)
    info = result.info.get("atlas", {})
    what = (f"<p>{esc(info.get('units', len(result.items)))} {esc(info.get('kind', 'unit'))}s of layer "
            f"<b>{esc(info.get('layer', '?'))}</b></p>")
    parts = [summary_line(result), what]
    sheet = _png(folder / "atlas.png")
    links = " ".join(f'<a href="#{anchor}unit-{i}">{i}</a>' for i in range(len(result.items)))
    if sheet is not None:
        parts.append(section("contact sheet", img(sheet, "atlas contact sheet") + f"<p>units: {links}</p>", level=3))
    cards = []
    for i, item in enumerate(result.items):
        unit = item.metrics.get("unit", i)
        png = _png(folder / "units" / f"unit_{int(unit):05d}.png")
        picture = img(png, item.target) if png is not None else ""
        cards.append(f'<div class="card" id="{anchor}unit-{i}">{picture}<div>{esc(item.target)}</div>'
                     f"<div>{status_html(item.status)}, activation {esc(_num(item.metrics.get('activation')))}</div>"
                     "</div>")
    parts.append(section("units", f'<div class="cards">{"".join(cards)}</div>', level=3))
    if result.timing:
        parts.append(section("timing", key_values(result.timing, ("measure", "value")), level=3))
    if isinstance(result.info.get("options"), dict):
        parts.append(section("options (to rerun)", key_values(result.info["options"]), level=3))
    return "".join(parts)


def _patterns_view(folder: Path, anchor: str) -> str:
    data = _json(folder / "result.json") or {}
    what = (f"<p>{esc(data.get('units', '?'))} {esc(data.get('kind', ''))} patterns of layer "
            f"<b>{esc(data.get('layer', '?'))}</b> in input space</p>")
    parts = [what]
    sheet = _png(folder / "grid.png")
    if sheet is not None:
        parts.append(section("contact sheet", img(sheet, "unit patterns"), level=3))
    cards = []
    for i, path in enumerate(sorted(folder.glob("item_*.png"))):
        png = _png(path)
        if png is not None:
            cards.append(f'<div class="card" id="{anchor}unit-{i}">{img(png, path.stem)}<div>{esc(path.stem)}</div>'
                         "</div>")
    if cards:
        parts.append(section("units", f'<div class="cards">{"".join(cards)}</div>', level=3))
    parts.append(section("options (to rerun)", key_values({k: v for k, v in data.items()
                                                          if k not in ("command", "environment")}), level=3))
    return "".join(parts)


def _num(value: Any, spec: str = ".4g") -> str:
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _counterexample(folder: Path, anchor: str) -> str:
    """The counterexample file and its re-check: the recorded outputs against a fresh forward pass."""
    text_path = folder / "counterexample.txt"
    if not text_path.exists():
        return ""
    data = _json(folder / "result.json") or {}
    item = (data.get("items") or [{}])[0]
    checks = [f"solver re-check margin (>= 0: the output set is reached): {_num(item.get('margin'))}"]
    network = data.get("network")
    if network and (folder / "inputs.npy").exists() and (folder / "outputs.npy").exists():
        checks.append(_rerun(Path(network), folder))
    lines = "".join(f"<li>{esc(c)}</li>" for c in checks if c)
    return (f'<div id="{anchor}cex"><h4>counterexample ({esc(Path(str(network)).name)}, '
            f"{esc(Path(str(data.get('spec', ''))).name)})</h4><ul>{lines}</ul>"
            f"<pre>{esc(text_path.read_text())}</pre></div>")


def _rerun(network: Path, folder: Path) -> str:
    """Run the saved input through the network again and compare with the saved outputs."""
    from netinvert.models.load import load

    if not network.exists():
        return f"network {network} is not on this machine: outputs not re-run"
    try:
        model = load(str(network))
        x = np.load(folder / "inputs.npy").astype(np.float32)
        y = np.load(folder / "outputs.npy")
        import torch

        with torch.no_grad():
            fresh = model(torch.from_numpy(x).reshape(len(x), *model.input_spec.shape))
            fresh = fresh.reshape(len(x), -1).cpu().numpy()
    except (NetinvertError, OSError, ValueError, RuntimeError) as exc:
        return f"outputs not re-run: {exc}"
    diff = float(np.abs(fresh - y.reshape(len(y), -1)).max())
    return f"re-run through {network.name} now: largest |f(x) - Y| = {diff:.3g}"


def _solve_view(folder: Path, anchor: str) -> str:
    data = _json(folder / "result.json") or {}
    item = (data.get("items") or [{}])[0]
    row = [Path(str(data.get("network", "?"))).name, Path(str(data.get("spec", "?"))).name,
           status_html(str(item.get("status", data.get("status", "?")))), item.get("stage"),
           item.get("solve_seconds"), item.get("margin"), data.get("cases"), item.get("reason")]
    parts = [section("verdict", table(["network", "property", "status", "stage", "seconds", "margin", "cases",
                                       "reason"], [row], raw=(2,)), level=3)]
    certificates = [c for c in data.get("certificates") or [] if isinstance(c, dict)]
    if certificates:
        keys = list(dict.fromkeys(k for c in certificates for k in c))
        rows = [[i] + [c.get(k) for k in keys] for i, c in enumerate(certificates)]
        parts.append(section("bound statistics per case", table(["case"] + [k.replace("_", " ") for k in keys], rows),
                             level=3))
    parts.append(_counterexample(folder, anchor))
    return "".join(parts)


def _solve_family_view(folder: Path, anchor: str) -> str:
    with (folder / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    subfolders = {p.name: p for p in folder.iterdir() if p.is_dir()}
    table_rows, examples = [], []
    total = 0.0
    for i, row in enumerate(rows):
        name = next((n for n in subfolders if n.startswith(f"{i:03d}_")), None)
        seconds = float(row.get("seconds") or 0)
        total += seconds
        link = ""
        if name and (subfolders[name] / "counterexample.txt").exists():
            link = f'<a href="#{anchor}i{i}cex">counterexample</a>'
            examples.append(_counterexample(subfolders[name], f"{anchor}i{i}"))
        unstable = _unstable(subfolders[name]) if name else "-"
        table_rows.append([i, Path(row.get("onnx", "")).name, Path(row.get("vnnlib", "")).name,
                           status_html(row.get("status", "?")), row.get("stage"), seconds, unstable, row.get("reason"),
                           link])
    summary = (f'<p class="summary">{len(rows)} instances: {status_summary([r.get("status", "?") for r in rows])}; '
               f"{total:.3g} s in all</p>")
    header = ["#", "network", "property", "status", "stage", "seconds", "unstable ReLUs (CROWN / all)", "reason", ""]
    parts = [summary, section("instances", table(header, table_rows, raw=(3, 8)), level=3)]
    if examples:
        parts.append(section("counterexamples", "".join(examples), level=3))
    return "".join(parts)


def _unstable(folder: Path) -> str:
    """Bound statistics of one instance: ReLUs still unstable after CROWN out of all, over its cases."""
    data = _json(folder / "result.json") or {}
    cases = [c for c in data.get("certificates") or [] if isinstance(c, dict) and "unstable_crown" in c]
    if not cases:
        return "-"
    return " ".join(f"{sum(c['unstable_crown'])}/{sum(c.get('hidden') or [])}" for c in cases[:4]) + \
        (" ..." if len(cases) > 4 else "")


def _bounds_view(folder: Path, anchor: str) -> str:
    data = _json(folder / "result.json") or {}
    pictures = [p for p in sorted(folder.glob("*.png")) if not _SHOWN_ELSEWHERE.match(p.name)]
    parts = []
    if not pictures:
        drawn = _boxes_png(data)
        if drawn is not None:
            parts.append(section("certified preimage", img(drawn, "certified boxes"), level=3))
    result = _load(folder)
    if result is not None:
        parts.append(result_section(result))
    return _other_pictures(folder) + "".join(parts)


def _boxes_png(data: dict[str, Any]) -> bytes | None:
    """The certified (green) and uncertain (orange) boxes of a 2-D preimage, drawn from ``result.json``."""
    pre = (data.get("preimage") or [None])[0]
    if not isinstance(pre, dict) or len((pre.get("domain") or [[]])[0]) != 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from netinvert.ground.page import png_bytes

    fig = Figure(figsize=(5, 5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for name, colour in (("uncertain", "orange"), ("inside", "tab:green")):
        for lo, hi in pre.get(name) or []:
            ax.add_patch(Rectangle(lo, hi[0] - lo[0], hi[1] - lo[1], fc=colour, ec="none", alpha=0.6))
    (lo, hi) = pre["domain"]
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_title(f"{pre.get('target', '')}: certified inside (green), uncertain (orange)", fontsize=9)
    return png_bytes(fig)


def _pictures_view(folder: Path, anchor: str) -> str:
    data = _json(folder / "result.json") or {}
    info = {k: v for k, v in data.items() if k not in ("command", "environment", "layers")
            and isinstance(v, (int, float, str, bool, type(None)))}
    layers = [row for row in data.get("layers") or [] if isinstance(row, dict)]
    parts = [_other_pictures(folder)]
    if layers:
        keys = list(dict.fromkeys(k for row in layers for k in row))
        parts.append(section("layers", table([k.replace("_", " ") for k in keys],
                                             [[row.get(k) for k in keys] for row in layers]), level=3))
    parts.append(section("options (to rerun)", key_values(info), level=3))
    return "".join(parts)


_VIEWS = {"leakage": _leakage_view, "solve-family": _solve_family_view, "solve": _solve_view, "atlas": _atlas_view,
          "patterns": _patterns_view, "bounds": _bounds_view, "design": _design_view, "invert": _invert_view,
          "pictures": _pictures_view, "result": _result_view}


def title_of(folder: Path, kind: str) -> str:
    data = _json(folder / "result.json")
    data = data if isinstance(data, dict) else {}
    names = {"leakage": "leakage", "solve-family": "solve (family)", "solve": "solve", "patterns": "patterns"}
    what = names.get(kind, data.get("method", kind))
    model = data.get("model")
    return f"{what} on {model}: {folder.name}" if model else f"{what}: {folder.name}"


def run_body(folder: str | os.PathLike[str], anchor: str = "") -> tuple[str, str]:
    """``(title, html)`` of one result folder's view; ``anchor`` prefixes every id on it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NetinvertError(f"{folder} is not a folder: give a result folder that a netinvert command wrote")
    kind = kind_of(folder)
    return title_of(folder, kind), _VIEWS[kind](folder, anchor)


def _recorded(folder: Path) -> tuple[Any, Any]:
    data = _json(folder / "result.json")
    data = data if isinstance(data, dict) else {}
    return data.get("command"), data.get("environment")


def folder_page(folder: str | os.PathLike[str], command: Sequence[str] | None = None) -> str:
    """The whole page of one result folder, with its footer (command line, versions, machine)."""
    folder = Path(folder)
    title, body = run_body(folder)
    recorded, env = _recorded(folder)
    note = "" if env else "versions and machine of this report, not recorded with the run"
    return document(title, f"<h1>{esc(title)}</h1>{body}{footer(recorded or command, env, note)}")


def record_run(folder: Path, command: Sequence[str]) -> None:
    """Add the command line and this machine to the folder's ``result.json`` unless it says already."""
    path = folder / "result.json"
    data = _json(path)
    if isinstance(data, dict) and "command" not in data:
        write_json(path, {**data, "command": list(command), "environment": environment()})


def write_report(folder: str | os.PathLike[str], command: Sequence[str] | None = None) -> Path:
    """Write ``folder/report.html`` (atomically); ``command`` (the CLI's argv) is recorded in result.json."""
    folder = Path(folder)
    if command is not None:
        record_run(folder, command)
    return write_text(folder / REPORT, folder_page(folder, command))


def write_index(folders: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> Path:
    """One page over several result folders: a contents table, then each run's view and rerun line."""
    if not folders:
        raise NetinvertError("give at least one result folder")
    if Path(out).is_dir():
        raise NetinvertError(f"{out} is a folder: give a file name for the page with --out, e.g. index.html")
    sections, contents = [], []
    for n, folder in enumerate(map(Path, folders)):
        title, body = run_body(folder, anchor=f"r{n}-")
        command, env = _recorded(folder)
        rerun = footer(command, env, "" if env else "not recorded with the run", tag="div")
        sections.append(section(title, body + rerun, anchor=f"r{n}"))
        contents.append((f'<a href="#r{n}">{esc(title)}</a>', esc(str(folder))))
    body = (f"<h1>netinvert report: {len(sections)} runs</h1>" + table(["run", "folder"], contents, raw=(0, 1))
            + "".join(sections) + footer(None, None, "this page was gathered by netinvert report"))
    return write_text(out, document("netinvert report", body))



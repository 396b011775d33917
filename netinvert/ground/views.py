"""The view of one in-memory result, per kind of run: the body of its ``report.html`` and of its notebook display.

A result's ``kind`` picks the view, and every view reads only the result (its items, info and ``files``), so
the page written with a folder, the page ``netinvert report`` draws again from it and a notebook's display
are the same. Each view answers "did it work, how well, how do I rerun it": the grid and per-item scores for
imagine / sample, the contact sheet with an anchor per unit for atlas, original beside reconstruction for
invert, PSNR/SSIM against depth for leakage, a VNN-COMP table with every counterexample for solve, the
certified boxes for a preimage, and the pictures of design, draw and warp.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netinvert.ground.page import (
    ROW_LIMIT,
    document,
    esc,
    footer,
    fragment,
    img,
    key_values,
    options_of,
    png_bytes,
    result_section,
    section,
    status_html,
    status_summary,
    summary_line,
    table,
    thumbnails,
)

if TYPE_CHECKING:
    from netinvert.ground.result import Result

WIDE = 1400
"""Pictures wider than this (pixels) keep their size and scroll sideways instead of shrinking (the warp strip)."""
_TITLES = {"leakage": "leakage", "solve-family": "solve (family)", "solve": "solve", "patterns": "patterns",
           "atlas": "atlas"}


def _pictures(result: Result, shown: Iterable[str] = ()) -> str:
    """Every PNG among the result's files that its view did not show already."""
    parts = []
    for name, png in sorted(result.files.items()):
        if name in shown or not name.endswith(".png"):
            continue
        wide = ' class="wide"' if int.from_bytes(png[16:20], "big") > WIDE else ""
        parts.append(f"<figure{wide}>{img(png, Path(name).stem)}<figcaption>{esc(name)}</figcaption></figure>")
    return section("pictures", "".join(parts), level=3) if parts else ""


def _num(value: Any, spec: str = ".4g") -> str:
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _cards(result: Result, anchor: str, compact: bool, caption: Callable[[int], str]) -> str:
    """One card per item (its input as a picture, its own anchor ``unit-N``), the first ``ROW_LIMIT`` when compact."""
    limit = ROW_LIMIT if compact else None
    cards = [f'<div class="card" id="{anchor}unit-{i}">{img(png, result.items[i].target)}{caption(i)}</div>'
             for i, png in enumerate(thumbnails(result, limit))]
    return section("units", f'<div class="cards">{"".join(cards)}</div>', level=3) if cards else ""


def _plain_view(result: Result, anchor: str, compact: bool) -> str:
    return result_section(result, compact=compact) + _pictures(result)


def _design_view(result: Result, anchor: str, compact: bool) -> str:
    """Inverse design: the r_T curve (best re-simulated error among the first T solutions), the solutions and
    their pictures (arm poses, the level set of a 2-input network)."""
    from netinvert.ground.page import curve_png

    curve = result.info.get("r_curve")
    png = curve_png({"r_T (mean over targets)": curve}, xlabel="T (solutions proposed)") if curve else None
    head = section("r_T: best re-simulated MSE among the first T solutions", img(png, "r_T curve"),
                   level=3) if png is not None else ""
    return head + _plain_view(result, anchor, compact)


def _invert_view(result: Result, anchor: str, compact: bool) -> str:
    layer = result.info.get("layer")
    parts = [f"<p>reconstructed from the activations of layer <b>{esc(layer)}</b></p>" if layer else ""]
    pair = result.files.get("comparison.png")
    if pair is not None:
        parts.append(section("original beside reconstruction", img(pair, "original and reconstruction"), level=3))
    rows = [(i, item.metrics.get("psnr"), item.metrics.get("ssim"), item.metrics.get("activation_error"),
             item.metrics.get("verifier_agrees")) for i, item in enumerate(result.items)]
    parts.append(section("reconstruction quality",
                         table(["item", "PSNR dB", "SSIM", "activation error", "verifier agrees"], rows), level=3))
    parts.append(result_section(result, compact=compact))
    return "".join(parts) + _pictures(result, ("comparison.png",))


def _leakage_view(result: Result, anchor: str, compact: bool) -> str:
    parts = []
    plot = result.files.get("psnr_vs_depth.png")
    if plot is not None:
        parts.append(section("PSNR against depth", img(plot, "PSNR against layer depth"), level=3))
    header = ["layer", "depth", "method", "PSNR dB", "SSIM", "verifier agreement", "activation error", "seconds",
              "inputs"]
    keys = ["layer", "depth", "method", "psnr", "ssim", "verifier_agreement", "activation_error", "seconds", "count"]
    body = table(header, [[item.metrics.get(k) for k in keys] for item in result.items])
    parts.append(section("PSNR / SSIM per layer and method", body, level=3))
    parts.append("<p>Higher PSNR and SSIM mean the layer's activations give its input away more completely.</p>")
    return "".join(parts) + _pictures(result, ("psnr_vs_depth.png",))


def _atlas_view(result: Result, anchor: str, compact: bool) -> str:
    info = result.info.get("atlas", {})
    what = (f"<p>{esc(info.get('units', len(result.items)))} {esc(info.get('unit', 'unit'))}s of layer "
            f"<b>{esc(info.get('layer', '?'))}</b></p>")
    parts = [summary_line(result), what]
    sheet = result.files.get("atlas.png")
    if sheet is not None:
        shown = len(result.items) if not compact else min(len(result.items), ROW_LIMIT)
        links = " ".join(f'<a href="#{anchor}unit-{i}">{i}</a>' for i in range(shown))
        parts.append(section("contact sheet", img(sheet, "atlas contact sheet") + f"<p>units: {links}</p>", level=3))
    parts.append(_cards(result, anchor, compact, lambda i: (
        f"<div>{esc(result.items[i].target)}</div><div>{status_html(result.items[i].status)}, activation "
        f"{esc(_num(result.items[i].metrics.get('activation')))}</div>")))
    if result.timing:
        parts.append(section("timing", key_values(result.timing, ("measure", "value")), level=3))
    options = result.info.get("options")
    if isinstance(options, dict):
        parts.append(section("options (to rerun)", key_values(options), level=3))
    return "".join(parts) + _pictures(result, ("atlas.png",))


def _patterns_view(result: Result, anchor: str, compact: bool) -> str:
    from netinvert.ground.page import grid_png

    info = result.info
    what = (f"<p>{esc(info.get('units', len(result.items)))} {esc(info.get('patterns', ''))} patterns of layer "
            f"<b>{esc(info.get('layer', '?'))}</b> in input space</p>")
    parts = [what]
    sheet = grid_png(result)
    if sheet is not None:
        parts.append(section("contact sheet", img(sheet, "unit patterns"), level=3))
    parts.append(_cards(result, anchor, compact, lambda i: f"<div>{esc(result.items[i].target)}</div>"))
    parts.append(section("options (to rerun)", key_values(options_of(result)), level=3))
    return "".join(parts) + _pictures(result)


def _counterexample(metrics: dict[str, Any], text: str | None, anchor: str) -> str:
    """A counterexample (VNN-COMP format) and its re-checks: the solver's margin and a fresh forward pass."""
    if text is None:
        return ""
    network, spec = Path(str(metrics.get("network", "?"))).name, Path(str(metrics.get("spec", "?"))).name
    checks = [f"solver re-check margin (>= 0: the output set is reached): {_num(metrics.get('margin'))}"]
    if isinstance(metrics.get("rerun_error"), (int, float)):
        checks.append(f"re-run through {network} after solving: largest |f(x) - Y| = {metrics['rerun_error']:.3g}")
    lines = "".join(f"<li>{esc(c)}</li>" for c in checks)
    return (f'<div id="{anchor}cex"><h4>counterexample ({esc(network)}, {esc(spec)})</h4><ul>{lines}</ul>'
            f"<pre>{esc(text)}</pre></div>")


def _solve_view(result: Result, anchor: str, compact: bool) -> str:
    info = result.info
    network, spec = Path(str(info.get("network", "?"))).name, Path(str(info.get("spec", "?"))).name
    rows = [[network, spec, status_html(item.status), item.metrics.get("stage"), item.metrics.get("solve_seconds"),
             item.metrics.get("margin"), info.get("cases"), item.reason] for item in result.items]
    parts = [section("verdict", table(["network", "property", "status", "stage", "seconds", "margin", "cases",
                                       "reason"], rows, raw=(2,)), level=3)]
    certificates = [c for c in info.get("certificates") or [] if isinstance(c, dict)]
    if certificates:
        keys = list(dict.fromkeys(k for c in certificates for k in c))
        rows = [[i] + [c.get(k) for k in keys] for i, c in enumerate(certificates)]
        parts.append(section("bound statistics per case", table(["case"] + [k.replace("_", " ") for k in keys], rows),
                             level=3))
    text = result.files.get("counterexample.txt")
    if result.items and text is not None:
        parts.append(_counterexample({**info, **result.items[0].metrics}, text.decode(), anchor))
    return "".join(parts)


def _solve_family_view(result: Result, anchor: str, compact: bool) -> str:
    rows, examples = [], []
    for i, item in enumerate(result.items):
        m = item.metrics
        link = ""
        if m.get("counterexample"):
            link = f'<a href="#{anchor}i{i}cex">counterexample</a>'
            examples.append(_counterexample(m, m["counterexample"], f"{anchor}i{i}"))
        rows.append([i, Path(str(m.get("network", ""))).name, Path(str(m.get("spec", ""))).name,
                     status_html(item.status), m.get("stage"), m.get("seconds"), m.get("unstable", "-"), item.reason,
                     link])
    total = sum(float(item.metrics.get("seconds") or 0) for item in result.items)
    summary = (f'<p class="summary">{len(result.items)} instances: {status_summary(result.statuses)}; '
               f"{total:.3g} s in all</p>")
    header = ["#", "network", "property", "status", "stage", "seconds", "unstable ReLUs (CROWN / all)", "reason", ""]
    parts = [summary, section("instances", table(header, rows, raw=(3, 8)), level=3)]
    if examples:
        parts.append(section("counterexamples", "".join(examples), level=3))
    return "".join(parts)


def _preimage_view(result: Result, anchor: str, compact: bool) -> str:
    pictures = _pictures(result)
    drawn = None if pictures else _boxes_png(result.info)
    boxes = section("certified preimage", img(drawn, "certified boxes"), level=3) if drawn is not None else ""
    return pictures + boxes + result_section(result, compact=compact)


def _boxes_png(info: dict[str, Any]) -> bytes | None:
    """The certified (green) and uncertain (orange) boxes of a 2-D preimage, drawn from the result's info."""
    pre = (info.get("preimage") or [None])[0]
    if not isinstance(pre, dict) or len(next(iter(pre.get("domain") or [[]]))) != 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    fig = Figure(figsize=(5, 5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for name, colour in (("uncertain", "orange"), ("inside", "tab:green")):
        for lo, hi in pre.get(name) or []:
            ax.add_patch(Rectangle(tuple(lo), hi[0] - lo[0], hi[1] - lo[1], fc=colour, ec="none", alpha=0.6))
    lo, hi = pre["domain"]
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_title(f"{pre.get('target', '')}: certified inside (green), uncertain (orange)", fontsize=9)
    return png_bytes(fig)


def _pictures_view(result: Result, anchor: str, compact: bool) -> str:
    """``draw`` and ``warp``: the picture, the layer table and the options."""
    layers = [row for row in result.info.get("layers") or [] if isinstance(row, dict)]
    parts = [_pictures(result)]
    if layers:
        keys = list(dict.fromkeys(k for row in layers for k in row))
        parts.append(section("layers", table([k.replace("_", " ") for k in keys],
                                             [[row.get(k) for k in keys] for row in layers]), level=3))
    options = {"model": result.model, **{k: v for k, v in result.info.items() if k not in ("command", "environment")
                                         and isinstance(v, (int, float, str, bool, type(None)))}}
    parts.append(section("options (to rerun)", key_values(options), level=3))
    return "".join(parts)


_VIEWS: dict[str, Callable[[Result, str, bool], str]] = {
    "result": _plain_view, "imagine": _plain_view, "sample": _plain_view, "invert": _invert_view,
    "atlas": _atlas_view, "patterns": _patterns_view, "leakage": _leakage_view, "solve": _solve_view,
    "solve-family": _solve_family_view, "preimage": _preimage_view, "design": _design_view, "draw": _pictures_view,
    "warp": _pictures_view}


def _data_line(result: Result) -> str:
    """How the model's data was scaled into its input range (``info["data"]``, recorded by ``invert``), one line."""
    data = result.info.get("data")
    if not isinstance(data, dict) or not data.get("scaling"):
        return ""
    return f"<p>data {esc(data.get('key', '?'))}: {esc(data['scaling'])}</p>"


def view(result: Result, anchor: str = "", *, compact: bool = False) -> str:
    """The body of ``result``'s view (``anchor`` prefixes every id on it; ``compact``: cut long tables and
    card lists at ``ROW_LIMIT`` and leave out the item thumbnails, for notebooks), after the line on its data."""
    return _data_line(result) + _VIEWS[result.kind](result, anchor, compact)


def title(result: Result, name: str = "") -> str:
    """``imagine on digits-cnn: out3``: what ran, on which model, in which folder."""
    what = _TITLES.get(result.kind, result.method)
    return f"{what} on {result.model}" + (f": {name}" if name else "")


def run_footer(result: Result, tag: str = "footer") -> str:
    """The recorded command line, versions and machine of the run (those of this process when not recorded)."""
    env = result.info.get("environment")
    note = "" if isinstance(env, dict) else "versions and machine of this page, not recorded with the run"
    return footer(result.info.get("command"), env if isinstance(env, dict) else None, note, tag=tag)


def page_html(result: Result, name: str = "") -> str:
    """The whole ``report.html`` of a result saved in the folder ``name``."""
    heading = title(result, name)
    return document(heading, f"<h1>{esc(heading)}</h1>{view(result)}{run_footer(result)}")


def notebook_html(result: Result) -> str:
    """The same view, compact, as a notebook fragment with scoped styles."""
    return fragment(f"<h1>{esc(title(result))}</h1>{view(result, compact=True)}")

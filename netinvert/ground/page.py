"""Self-contained HTML for results: pictures as ``data:`` PNGs, inline CSS, no script, no network.

This is the bottom of the page machinery, so that a :class:`~netinvert.ground.result.Result` can draw
its page and show itself in a notebook (``_repr_html_``) without importing anything above ``ground``. It
holds the kit (escaping, tables, embedded pictures, the objective curve, the run's environment, the page
frame) and :func:`result_section`, the plain view of one in-memory result; :mod:`netinvert.ground.views`
builds the view of each kind of run on top of it.
"""

from __future__ import annotations

import base64
import html
import io
import os
import platform
import shlex
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netinvert.ground.result import Result

STATUS_COLOURS = {"found": "#1a7f37", "not-reached": "#bc4c00", "none-exists": "#0550ae", "unknown": "#6e7781"}
ROW_LIMIT = 40
"""Rows shown in a compact (notebook) item table; the full page shows every row."""

CSS = """
.ni{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1f2328;max-width:1100px}
.ni h1{font-size:22px;margin:.2em 0 .4em}.ni h2{font-size:18px;margin:1.2em 0 .4em;border-bottom:1px solid #d0d7de}
.ni h3{font-size:15px;margin:1em 0 .3em}
.ni table{border-collapse:collapse;margin:.4em 0;font-variant-numeric:tabular-nums}
.ni th,.ni td{border:1px solid #d0d7de;padding:2px 8px;text-align:left;vertical-align:top}
.ni th{background:#f6f8fa}.ni td.num{text-align:right}
.ni img{max-width:100%}.ni img.thumb{width:56px}.ni img.thumb,.ni .card img{image-rendering:pixelated}
.ni figure{margin:0 0 .6em;overflow-x:auto}.ni figure.wide img{max-width:none}
.ni .status{font-weight:600}.ni .summary{font-size:15px;margin:.3em 0}
.ni pre{background:#f6f8fa;padding:6px 8px;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
.ni .cards{display:flex;flex-wrap:wrap;gap:8px}.ni .card{border:1px solid #d0d7de;padding:4px;width:132px}
.ni .card img{width:124px}.ni .card:target{outline:3px solid #0969da}
.ni .pair{display:flex;gap:16px;flex-wrap:wrap;align-items:flex-start}
.ni footer{margin-top:2em;border-top:1px solid #d0d7de;color:#57606a;font-size:12px}
"""


def esc(value: Any) -> str:
    """Text escaped for HTML."""
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """One value as short text: floats to four significant digits, booleans as yes/no, ``None`` as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return f"[{', '.join(fmt(v) for v in value[:8])}, ... ({len(value)} values)]"
    return str(value)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def img(png: bytes, alt: str, css_class: str = "") -> str:
    """An ``<img>`` holding the PNG itself."""
    extra = f' class="{css_class}"' if css_class else ""
    return f'<img src="{data_uri(png)}" alt="{esc(alt)}"{extra}>'


def png_bytes(picture: Any) -> bytes:
    """A PIL image or a matplotlib figure as PNG bytes."""
    buf = io.BytesIO()
    if hasattr(picture, "savefig"):
        picture.savefig(buf, format="png")
    else:
        picture.save(buf, format="PNG")
    return buf.getvalue()


def status_html(status: str) -> str:
    colour = STATUS_COLOURS.get(status, "#1f2328")
    return f'<span class="status" style="color:{colour}">{esc(status)}</span>'


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], raw: Sequence[int] = ()) -> str:
    """A table of values (formatted with :func:`fmt`); columns listed in ``raw`` hold ready HTML."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for j, value in enumerate(row):
            if j in raw:
                cells.append(f"<td>{value}</td>")
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                cells.append(f'<td class="num">{esc(fmt(value))}</td>')
            else:
                cells.append(f"<td>{esc(fmt(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def section(title: str, body: str, anchor: str | None = None, level: int = 2) -> str:
    ident = f' id="{esc(anchor)}"' if anchor else ""
    return f"<section{ident}><h{level}>{esc(title)}</h{level}>{body}</section>"


def key_values(values: Mapping[str, Any], header: Sequence[str] = ("option", "value")) -> str:
    """A two-column table of settings."""
    return table(header, [(k, v) for k, v in values.items()])


def curve_png(series: Mapping[str, Sequence[Any]], xlabel: str = "step", title: str = "",
              names: Sequence[str] = ()) -> bytes | None:
    """Line plot of each named series; ``None`` when there is nothing to draw.

    A series holds one number per step, or one list per step with a value per item (``names`` labels
    the items); non-numbers are skipped.
    """
    lines: dict[str, list[tuple[int, float]]] = {}
    for name, values in series.items():
        if not isinstance(values, (list, tuple)):
            continue
        width = max((len(v) for v in values if isinstance(v, (list, tuple))), default=0)
        columns = [(name, lambda v: v)] if not width else [
            (f"{name}: {names[j]}" if j < len(names) else f"{name} {j}", lambda v, j=j: v[j] if j < len(v) else None)
            for j in range(width)]
        for label, pick in columns:
            points = []
            for i, v in enumerate(values):
                value = pick(v) if isinstance(v, (list, tuple)) or not width else None
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    points.append((i, float(value)))
            if len(points) >= 2:
                lines[label] = points
    if not lines:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 2.8), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for name, points in lines.items():
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, label=name, lw=1.4)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    if 1 < len(lines) <= 12:
        ax.legend(fontsize=8)
    return png_bytes(fig)


def environment() -> dict[str, Any]:
    """Where this process runs: netinvert and torch versions, Python, platform and CPU count."""
    import torch

    try:
        version = metadata.version("netinvert")
    except metadata.PackageNotFoundError:
        version = "?"
    return {"netinvert": version, "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "cpus": os.cpu_count()}


def command_text(command: Sequence[str] | str | None) -> str:
    """A command line as one shell-quoted string (``argv[0]`` shortened to ``netinvert``)."""
    if command is None:
        return ""
    if isinstance(command, str):
        return command
    words = list(command)
    if words and os.path.basename(words[0]) in ("netinvert", "__main__.py"):
        words[0] = "netinvert"
    return shlex.join(words)


def footer(command: Sequence[str] | str | None, env: Mapping[str, Any] | None, note: str = "",
           tag: str = "footer") -> str:
    """Versions, command line and machine: enough to rerun the page's result (``tag`` div inside a page)."""
    env = env or environment()
    parts = [f"netinvert {esc(env.get('netinvert', '?'))}", f"torch {esc(env.get('torch', '?'))}",
             f"Python {esc(env.get('python', '?'))}", f"{esc(env.get('platform', '?'))}",
             f"{esc(env.get('cpus', '?'))} CPUs"]
    line = " · ".join(parts)
    cmd = command_text(command)
    rerun = f"<p>command: <code>{esc(cmd)}</code></p>" if cmd else ""
    return f"<{tag}>{rerun}<p>{line}{(' · ' + esc(note)) if note else ''}</p></{tag}>"


def document(title: str, body: str) -> str:
    """A whole HTML page around ``body``."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head>"
            f'<body><div class="ni">{body}</div></body></html>\n')


def fragment(body: str) -> str:
    """A piece of HTML for a notebook cell: the same styles, scoped to the ``ni`` class."""
    return f'<div class="ni"><style>{CSS}</style>{body}</div>'


def status_summary(statuses: Sequence[str]) -> str:
    """``3 found, 1 not-reached`` with each status in its colour."""
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return ", ".join(f"{n} {status_html(s)}" for s, n in counts.items()) or "no items"


_FIRST_METRICS = ("model_prob", "verifier_prob", "verifier_agrees", "predicted", "activation", "margin", "objective",
                  "psnr", "ssim", "activation_error", "verifier_agreement")
_SKIP_METRICS = ("class_index", "class_name", "verifier_note")


def metric_columns(items: Sequence[Any]) -> list[str]:
    """The metric keys worth a column: scalar values present in some item, well-known ones first."""
    seen: list[str] = []
    for item in items:
        for key, value in item.metrics.items():
            if key not in seen and key not in _SKIP_METRICS and (value is None or isinstance(value, (int, float, str))):
                seen.append(key)
    return [k for k in _FIRST_METRICS if k in seen] + [k for k in seen if k not in _FIRST_METRICS]


def items_table(result: Result, *, thumbnails: Sequence[bytes] | None = None, limit: int | None = None) -> str:
    """One row per item: picture, target, status, reason and every scalar metric (the first ``limit`` items)."""
    columns = metric_columns(result.items)
    header = (["#"] + (["input"] if thumbnails else []) + ["target", "status", "reason"]
              + [c.replace("_", " ") for c in columns])
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    rows = []
    shown = result.items if limit is None else result.items[:limit]
    for i, item in enumerate(shown):
        cells = [f'<td class="num">{i}</td>']
        if thumbnails:
            cells.append(f"<td>{img(thumbnails[i], item.target, 'thumb') if i < len(thumbnails) else ''}</td>")
        cells += [f"<td>{esc(item.target)}</td>", f"<td>{status_html(item.status)}</td>",
                  f"<td>{esc(item.reason)}</td>"]
        for key in columns:
            value = item.metrics.get(key)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            cells.append(f'<td{" class=num" if number else ""}>{esc(fmt(value))}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = len(result.items) - len(shown)
    tail = f"<p>... and {more} more items</p>" if more > 0 else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{tail}"


def grid_png(result: Result, limit: int | None = None) -> bytes | None:
    """The result's contact sheet (of the first ``limit`` inputs), drawn from its inputs; ``None`` unless pictures."""
    from netinvert.ground.images import grid_image, is_image

    if not is_image(result.inputs) or not len(result.inputs):
        return None
    captions = result.labels or [item.target for item in result.items]
    sheet = grid_image(result.inputs[:limit], captions[:limit], result.value_range)
    return png_bytes(sheet) if sheet is not None else None


def thumbnails(result: Result, limit: int | None = None) -> list[bytes]:
    """One small PNG per item input (empty unless the inputs are pictures)."""
    from netinvert.ground.images import is_image, upscaled

    if not is_image(result.inputs):
        return []
    shown = result.inputs if limit is None else result.inputs[:limit]
    return [png_bytes(upscaled(x, result.value_range)) for x in shown]


def summary_line(result: Result) -> str:
    timing = result.timing or {}
    total = timing.get("total_s")
    seconds = f" in {total:.3g} s" if isinstance(total, (int, float)) else ""
    return (f'<p class="summary">{len(result.items)} items: {status_summary(result.statuses)}{seconds}; '
            f"inputs {esc(tuple(result.inputs.shape))}</p>")


def options_of(result: Result) -> dict[str, Any]:
    """The settings a rerun needs: ``options`` if the method recorded them, else the scalar info entries."""
    options = result.info.get("options")
    if isinstance(options, dict):
        return dict(options)
    return {k: v for k, v in result.info.items()
            if k not in ("command", "environment") and (v is None or isinstance(v, (int, float, str, bool)))}


def notes_html(result: Result) -> str:
    """What the run noted beside its items (a batch split to fit memory, a score left out), one line each."""
    notes = result.info.get("notes")
    if not isinstance(notes, list) or not notes:
        return ""
    return "<ul>" + "".join(f"<li>note: {esc(note)}</li>" for note in notes) + "</ul>"


def result_section(result: Result, *, compact: bool = False) -> str:
    """The plain view of one result: summary, contact sheet, item table, objective curve, timing and options."""
    limit = ROW_LIMIT if compact else None
    parts = [summary_line(result), notes_html(result)]
    sheet = grid_png(result, limit)
    if sheet is not None:
        parts.append(section("inputs", img(sheet, "contact sheet of the inputs found"), level=3))
    thumbs = thumbnails(result, limit) if not compact else None
    parts.append(section("items", items_table(result, thumbnails=thumbs, limit=limit), level=3))
    curve = curve_png(result.history, title="objective per step", names=[item.target for item in result.items])
    if curve is not None:
        parts.append(section("objective", img(curve, "objective per step"), level=3))
    if result.timing:
        parts.append(section("timing", key_values(result.timing, ("measure", "value")), level=3))
    options = options_of(result)
    if options:
        parts.append(section("options (to rerun)", key_values(options), level=3))
    return "".join(parts)

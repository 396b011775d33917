"""``report.html`` drawn again from a saved folder, and one page over several saved runs.

Every folder a netinvert command writes holds its ``report.html`` already (written with the folder, from the
in-memory result: :mod:`netinvert.ground.views`). ``write_report`` draws it again from the reopened result
(say after an upgrade), and ``write_index`` gathers several runs into one page with a contents table; both
read each folder through :meth:`Result.load <netinvert.ground.result.Result.load>`, nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from netinvert.ground.errors import NetinvertError
from netinvert.ground.output import write_text
from netinvert.ground.page import document, esc, footer, section, table
from netinvert.ground.result import REPORT, Result
from netinvert.ground.views import page_html, run_footer, title, view


def _open(folder: Path) -> Result:
    if not folder.is_dir():
        raise NetinvertError(f"{folder} is not a folder: give a result folder that a netinvert command wrote")
    return Result.load(folder)


def write_report(folder: str | os.PathLike[str]) -> Path:
    """Write ``folder/report.html`` again (atomically) from the result saved there."""
    folder = Path(folder)
    return write_text(folder / REPORT, page_html(_open(folder), folder.name))


def write_index(folders: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> Path:
    """One page over several result folders: a contents table, then each run's view and rerun line."""
    if not folders:
        raise NetinvertError("give at least one result folder")
    if Path(out).is_dir():
        raise NetinvertError(f"{out} is a folder: give a file name for the page with --out, e.g. index.html")
    sections, contents = [], []
    for n, folder in enumerate(map(Path, folders)):
        result = _open(folder)
        heading = title(result, folder.name)
        body = view(result, anchor=f"r{n}-") + run_footer(result, tag="div")
        sections.append(section(heading, body, anchor=f"r{n}"))
        contents.append((f'<a href="#r{n}">{esc(heading)}</a>', esc(str(folder))))
    body = (f"<h1>netinvert report: {len(sections)} runs</h1>" + table(["run", "folder"], contents, raw=(0, 1))
            + "".join(sections) + footer(None, None, "this page was gathered by netinvert report"))
    return write_text(out, document("netinvert report", body))

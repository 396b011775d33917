"""``netinvert report``: draw a saved run's page again, or gather several runs into one page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from netinvert.cli.common import cli_errors, console


@cli_errors
def report(
    folders: Annotated[list[Path], typer.Argument(help="Result folders written by netinvert commands.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Page to write (default: FOLDER/report.html "
                                                                 "for one folder, index.html for several).")] = None,
) -> None:
    """Write a self-contained HTML page for result folders (pictures embedded; opens without network)."""
    from netinvert.report.html import write_index, write_report

    if out is None and len(folders) == 1:
        written = write_report(folders[0])
    else:
        written = write_index(folders, out or Path("index.html"))
    console.print(f"wrote {written}", highlight=False, soft_wrap=True)

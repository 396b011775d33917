"""``netinvert report`` (gather result folders into one page) and ``save_report``, which every command
calls right after it saves its folder so that each folder holds a ``report.html``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from netinvert.cli.common import cli_errors, console, err_console


def save_report(out: Path) -> None:
    """Write ``out/report.html`` and record the command line; a failure here only warns (the result is saved)."""
    from netinvert.report.html import write_report

    try:
        write_report(out, command=sys.argv)
    except Exception as exc:  # noqa: BLE001 - the result is already on disk; the page is only a view of it
        err_console.print(f"warning: could not write {out}/report.html ({type(exc).__name__}: {exc}); "
                          f"try `netinvert report {out}`", highlight=False, soft_wrap=True)


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

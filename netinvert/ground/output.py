"""The one atomic writer: every file and result folder netinvert writes goes through here.

A folder is written into a hidden temporary sibling and moved into place only when complete, so an
error or an interrupt never leaves a half-written result; a file is written beside its final name
and renamed over it. Rerunning into a folder that holds an earlier netinvert result replaces it
whole (no stale pictures beside new ones); a folder holding anything else is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from netinvert.ground.errors import NetinvertError

RESULT_MARK = "result.json"


def check_writable(out: str | os.PathLike[str], *, replace: bool = True) -> Path:
    """Fail up front (before any computation, creating nothing) unless ``out`` can be written.

    The nearest folder that exists on the way to ``out`` must take a new entry, and so must ``out`` itself when it
    is a folder already (checked by creating and removing a temporary one in each). With ``replace`` the folder
    must also be new, empty or an earlier result that a save may replace.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NetinvertError(f"output path {out} is a file: give a folder name as `out`")
    if replace:
        _check_replaceable(out)
    parent = next(p for p in out.absolute().parents if p.exists())
    for folder in (parent, out) if out.is_dir() else (parent,):
        if not folder.is_dir():
            raise NetinvertError(f"cannot write to {out}: {folder} is a file, not a writable folder; "
                                 "choose another `out`")
        try:
            Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=folder)).rmdir()
        except OSError as exc:
            raise NetinvertError(f"cannot write to {out}: {folder} is not a writable folder "
                                 f"({exc.strerror or exc}); choose another `out`") from None
    return out


def _check_replaceable(out: Path) -> None:
    if out.is_dir() and any(out.iterdir()) and not (out / RESULT_MARK).exists():
        raise NetinvertError(f"output folder {out} is not empty and holds no netinvert result: "
                             "give a new or empty folder as `out`")


@contextmanager
def atomic_folder(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces ``out`` whole, on error it is removed."""
    out = check_writable(out)
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.absolute().parent))
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.absolute().parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_file(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it into place; a folder that cannot
    take it is one :class:`NetinvertError` naming the file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    except OSError as exc:
        file = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        why = f"{file} is a file" if file is not None else exc.strerror or str(exc)
        raise NetinvertError(f"cannot write {path}: {why}; choose a writable folder") from None
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    return write_file(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | os.PathLike[str], value: Any) -> Path:
    return write_text(path, json.dumps(value, indent=2) + "\n")

"""One way to finish a run, for every command and for Python: score, draw, record, then save once.

``finish(result, out, model)`` adds what needs the model beyond the method's own scores (the realism of
class items, the pictures of a preimage or an inverse design), records the command line and this machine,
and saves the folder once, ``report.html`` included, drawn from the result in memory. Scoring and drawing
come after the work, so a failure there never loses it: it is logged in one line, recorded in
``info["notes"]``, and the result is saved without that score or picture. A run that keeps its own folder
as a checkpoint (an atlas, a leakage report, a VNN-COMP family) passes ``in_place=True``: its files are then
written into that folder one by one instead of replacing it whole.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from netinvert.ground.page import environment
from netinvert.ground.result import Result
from netinvert.models.wrapper import Model

log = logging.getLogger("netinvert")


def _realism(result: Result, model: Model) -> None:
    from netinvert.report import realism

    realism.annotate(model, result)


def _design_pictures(result: Result, model: Model) -> None:
    from netinvert.report.design import arm_poses_png, level_set_png

    if result.info.get("options", {}).get("simulator") == "arm":
        result.files["arm_poses.png"] = arm_poses_png(result)
    if tuple(model.input_spec.shape) == (2,):
        result.files["level_set.png"] = level_set_png(result, model)


def _preimage_pictures(result: Result, model: Model) -> None:
    from netinvert.methods.bounds import preimage_png

    if tuple(model.input_spec.shape) == (2,):
        for k in range(len(result.items)):
            result.files.setdefault(f"preimage_{k:02d}.png", preimage_png(model, result, which=k))


STEPS: dict[str, tuple[tuple[str, Callable[[Result, Model], None]], ...]] = {
    "imagine": (("realism", _realism),),
    "sample": (("realism", _realism),),
    "design": (("pictures", _design_pictures),),
    "preimage": (("pictures", _preimage_pictures),),
}
"""Per kind of run, what finishing adds with the model: (what, step)."""


def finish(result: Result, out: str | os.PathLike[str], model: Model | None = None, *,
           command: Sequence[str] | None = None, in_place: bool = False) -> Path:
    """Score and draw what needs ``model`` (see ``STEPS``), record ``command`` and this machine, save to ``out``.

    A failing step is logged and noted in ``info["notes"]`` and the result is saved without it; an interrupt
    during the steps saves the result, then goes on (raises ``KeyboardInterrupt``).
    """
    interrupted = None
    for what, step in STEPS.get(result.kind, ()) if model is not None else ():
        try:
            step(result, model)
        except Exception as exc:  # noqa: BLE001 - after the work: never lose it over a score or a picture
            _note(result, f"{what} not added ({type(exc).__name__}: {exc})")
        except KeyboardInterrupt:
            _note(result, f"{what} not added (interrupted)")
            interrupted = KeyboardInterrupt()
            break
    result.info["environment"] = environment()
    if command is not None:
        result.info["command"] = list(command)
    saved = result.write_files(out) if in_place else result.save(out)
    if interrupted is not None:
        raise interrupted
    return saved


def _note(result: Result, note: str) -> None:
    log.warning("warning: %s; the result is saved without it", note)
    result.info.setdefault("notes", []).append(note)

"""User-facing errors: one line that names the problem and the fix."""

from __future__ import annotations

from collections.abc import Iterable


class NetinvertError(ValueError):
    """A problem with the user's input; the CLI prints it as one line and exits with code 2."""


def choices(values: Iterable[object], limit: int = 40) -> str:
    """Format valid choices for an error message, shortened when there are many."""
    items = [str(v) for v in values]
    if len(items) > limit:
        return ", ".join(items[:limit]) + f", ... ({len(items)} in all)"
    return ", ".join(items)

"""Rendering for a terminal: aligned tables, local times, durations, status words, JSON."""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from typing import Any

import click

_STATUS_COLOURS = {
    "completed": "green",
    "cached": "blue",
    "failed": "red",
    "cancelled": "yellow",
    "skipped": "yellow",
    "retrying": "magenta",
    "running": "cyan",
    "pending": "cyan",
}


def status_word(status: str) -> str:
    """A status, coloured when the terminal shows colours (click strips them otherwise)."""
    return click.style(status, fg=_STATUS_COLOURS.get(str(status)))


def local_time(moment: datetime.datetime | None) -> str:
    """A timestamp in the local time zone, to the second."""
    if moment is None:
        return "-"
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def ago(moment: datetime.datetime | None, now: datetime.datetime | None = None) -> str:
    """How long ago a moment was: `12s ago`, `5m ago`, `3h ago`, `2d ago`."""
    if moment is None:
        return "-"
    now = now or datetime.datetime.now(datetime.UTC)
    seconds = max(0.0, (now - moment).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def duration(seconds: float | None) -> str:
    """A duration for people: `0.42s`, `12.3s`, `4m05s`, `2h03m`."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def span(start: datetime.datetime | None, end: datetime.datetime | None) -> float | None:
    """Seconds between two timestamps, when both are known."""
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], status_column: int = -1) -> str:
    """Rows as left-aligned columns under upper-case headers, two spaces apart."""
    cells = [[str(value) for value in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in cells:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in cells:
        padded = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        if 0 <= status_column < len(padded):
            # Pad before colouring: escape codes must not count towards the width.
            padded[status_column] = padded[status_column].replace(
                row[status_column], status_word(row[status_column]), 1
            )
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def echo_json(value: Any) -> None:
    """Print a value as indented JSON (timestamps as ISO 8601 in UTC)."""
    click.echo(json.dumps(value, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")

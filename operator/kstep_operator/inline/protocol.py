"""Messages between the operator, the executor and its workers: one JSON object per line."""

from __future__ import annotations

import json
from typing import IO, Any


def send(stream: IO[bytes], message: dict[str, Any]) -> None:
    """Write one message and flush it."""
    stream.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
    stream.flush()


def decode(line: bytes) -> dict[str, Any] | None:
    """One message from a line, or None for a blank or malformed line."""
    line = line.strip()
    if not line:
        return None
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None

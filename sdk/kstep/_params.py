"""Parameters: the JSON values a pipeline or step takes besides artifacts."""

from __future__ import annotations

import json
import math
from typing import Any

from kstep._errors import ParameterError, describe

ACCEPTED = "JSON values: None, bool, int, float, str, and lists or dicts of them (str keys)"


def check_json_value(value: Any, what: str) -> None:
    """Raise `ParameterError` naming `what` unless `value` is a JSON value."""
    problem = _find_problem(value, "")
    if problem is not None:
        path, bad = problem
        where = f" at {path}" if path else ""
        raise ParameterError(f"{what} is not a JSON value{where}: got {describe(bad)}; {ACCEPTED}")


def _find_problem(value: Any, path: str) -> tuple[str, Any] | None:
    if value is None or isinstance(value, bool | int | str):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value)
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            problem = _find_problem(item, f"{path}[{index}]")
            if problem is not None:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return (f"{path} key {key!r}".lstrip(), key)
            problem = _find_problem(item, f"{path}[{key!r}]")
            if problem is not None:
                return problem
        return None
    return (path, value)


def canonical_json(value: Any) -> str:
    """Serialize a JSON value canonically: sorted keys, no whitespace."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)

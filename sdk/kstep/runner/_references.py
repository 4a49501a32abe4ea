"""Importing steps, pipelines and hooks again from their references in another process."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from typing import Any

from kstep._errors import ExecutionError
from kstep._steps import SCRIPT_PACKAGE


def import_reference(reference: str) -> Any:
    """Import `module:qualname` or `path/to/file.py:qualname`."""
    module_part, _, qualname = reference.rpartition(":")
    if not module_part or not qualname:
        raise ExecutionError(
            f"reference {reference!r} is malformed; expected module:name or path.py:name"
        )
    module = _import_module(module_part, reference)
    target: Any = module
    try:
        for attribute in qualname.split("."):
            target = getattr(target, attribute)
    except AttributeError:
        raise ExecutionError(
            f"reference {reference!r}: {module_part!r} has no attribute {qualname!r}"
        ) from None
    return target


def _import_module(module_part: str, reference: str) -> Any:
    if module_part.endswith(".py"):
        path = os.path.abspath(module_part)
        # The path's hash keeps scripts of the same name in different directories apart.
        stem = os.path.splitext(os.path.basename(path))[0]
        digest = hashlib.sha256(path.encode()).hexdigest()[:8]
        name = f"{SCRIPT_PACKAGE}.{stem}_{digest}"
        if name in sys.modules:
            return sys.modules[name]
        if not os.path.exists(path):
            raise ExecutionError(f"reference {reference!r}: the file {path} does not exist")
        directory = os.path.dirname(path)
        if directory not in sys.path:
            sys.path.insert(0, directory)
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ExecutionError(f"reference {reference!r}: {path} cannot be imported")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(module_part)
    except ImportError as error:
        raise ExecutionError(
            f"reference {reference!r}: module {module_part!r} cannot be imported ({error}); "
            "is the code installed or on PYTHONPATH?"
        ) from None

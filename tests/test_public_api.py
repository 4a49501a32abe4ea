"""The public API: its names, and what `import kstep` costs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import kstep

# What a ZenML user needs: they only change their imports.
ZENML_NAMES = [
    "step",
    "pipeline",
    "Client",
    "get_step_context",
    "log_metadata",
    "Retry",
    "Materializer",
    "RunFailed",
]


def test_public_api_all_is_sorted_and_unique() -> None:
    assert kstep.__all__ == sorted(set(kstep.__all__))


@pytest.mark.parametrize("name", kstep.__all__)
def test_public_api_name_is_importable(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from kstep import {name}", namespace)

    assert namespace[name] is getattr(kstep, name)


@pytest.mark.parametrize("name", ZENML_NAMES)
def test_public_api_offers_the_zenml_names(name: str) -> None:
    assert name in kstep.__all__


def test_public_api_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'kstep' has no attribute 'Pipline'"):
        _ = kstep.Pipline  # type: ignore[attr-defined]


def test_public_api_run_failed_is_a_runtime_error() -> None:
    assert issubclass(kstep.RunFailed, RuntimeError)


def test_import_kstep_leaves_heavy_libraries_unimported() -> None:
    heavy = ["sqlalchemy", "pydantic", "boto3", "botocore", "numpy", "pandas", "alembic"]
    code = (
        "import json, sys\n"
        "import kstep\n"
        "from kstep import step, pipeline, get_step_context, log_metadata, Retry, Materializer\n"
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert json.loads(result.stdout) == []

"""Fixtures every kstep test shares.

Every test runs against its own `KSTEP_HOME` (a fresh SQLite database and artifact directory
in `tmp_path`) and its own default local engine, and leaves the materializer registry as it
found it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Import the optional built-in materializers up front, so that the registry snapshot each test
# restores already holds them.
import kstep.materializers._numpy
import kstep.materializers._pandas
import kstep.materializers._pydantic  # noqa: F401
from kstep.client import Client
from kstep.engine import LocalEngine
from kstep.materializers import _base

# The test bed's fixtures (control plane, kubelet stand-in, Postgres, S3): tests/testbed/plugin.py
pytest_plugins = ["testbed.plugin"]


@pytest.fixture(autouse=True)
def kstep_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh KSTEP_HOME and default engine for the test; other KSTEP_* settings unset.

    The test bed's own variables (KSTEP_TEST_*) stay.
    """
    for name in list(os.environ):
        if name.startswith("KSTEP_") and not name.startswith("KSTEP_TEST_"):
            monkeypatch.delenv(name)
    home = tmp_path / "kstep-home"
    monkeypatch.setenv("KSTEP_HOME", str(home))
    LocalEngine.reset_default()
    yield home
    LocalEngine.reset_default()


@pytest.fixture(autouse=True)
def materializer_registry() -> Iterator[None]:
    """Undo the registrations of materializers a test defines."""
    saved = dict(_base._registry)
    yield
    _base._registry.clear()
    _base._registry.update(saved)


@pytest.fixture
def client(kstep_home: Path) -> Iterator[Client]:
    """A client on the test's stores."""
    opened = Client()
    yield opened
    opened.stores.metadata.close()

"""Fixtures every kstep test shares.

Every test runs against its own `KSTEP_HOME` (a fresh SQLite database and artifact directory
in `tmp_path`) and its own default local engine, and leaves the materializer registry as it
found it.
"""

from __future__ import annotations

import importlib.util
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


def _testbed_installed() -> bool:
    try:
        return importlib.util.find_spec("testbed.plugin") is not None
    except ModuleNotFoundError:
        return False


# The test bed (a real Postgres server and a real S3-compatible server) is a plugin of its own;
# without it, the tests that need those servers are skipped.
TESTBED = _testbed_installed()
pytest_plugins = ["testbed.plugin"] if TESTBED else []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if TESTBED:
        return
    skip = pytest.mark.skip(reason="needs the test bed plugin (testbed.plugin) for its servers")
    for item in items:
        if item.get_closest_marker("postgres") or item.get_closest_marker("s3"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def kstep_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh KSTEP_HOME and default engine for the test; other KSTEP_* settings unset."""
    for name in [name for name in os.environ if name.startswith("KSTEP_")]:
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

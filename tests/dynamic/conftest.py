"""Fixtures of the dynamic pipeline tests.

Each test gets its own `KSTEP_HOME` (a fresh SQLite database and artifact directory) and its
own default local engine, and a side-channel file where steps note when their bodies start
and finish, so that tests can count executions independently of the metadata store.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynamic import steps
from kstep._settings import Settings
from kstep.client import Client
from kstep.engine import LocalEngine
from kstep.stores import Stores


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty metadata store with the current schema, copied into each test's home.

    Migrating a new database costs more than most of these tests take to run.
    """
    home = tmp_path_factory.mktemp("migrated")
    database = home / "kstep.db"
    stores = Stores.open(Settings(home=str(home), metadata_url=f"sqlite:///{database}"))
    stores.metadata.close()
    return database


@pytest.fixture(autouse=True)
def kstep_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, migrated_database: Path
) -> Iterator[Path]:
    """A fresh KSTEP_HOME and default engine for the test; other KSTEP_* settings unset."""
    for name in [name for name in os.environ if name.startswith("KSTEP_")]:
        monkeypatch.delenv(name)
    home = tmp_path / "kstep-home"
    home.mkdir()
    shutil.copyfile(migrated_database, home / "kstep.db")
    monkeypatch.setenv("KSTEP_HOME", str(home))
    LocalEngine.reset_default()
    yield home
    LocalEngine.reset_default()


@pytest.fixture
def client(kstep_home: Path) -> Iterator[Client]:
    """A client on the test's stores."""
    opened = Client()
    yield opened
    opened.stores.metadata.close()


@pytest.fixture
def side_channel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> steps.SideChannel:
    """The side-channel file of this test, also visible to step subprocesses."""
    path = tmp_path / "side-channel.log"
    monkeypatch.setenv(steps.SIDE_CHANNEL_ENV, str(path))
    return steps.SideChannel(path)

"""Fixtures for the store tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kstep.stores.metadata import MetadataStore


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """The URL of a SQLite metadata store that does not exist yet."""
    return f"sqlite:///{tmp_path / 'metadata.db'}"


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[MetadataStore]:
    """A fresh, migrated SQLite metadata store."""
    store = MetadataStore.open(sqlite_url)
    yield store
    store.close()

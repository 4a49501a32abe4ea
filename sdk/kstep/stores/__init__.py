"""The two stores every run writes to: artifacts (files) and metadata (rows).

The artifact store holds artifact versions' files and step logs, in a local directory or
an S3 bucket. The metadata store holds runs, step runs, artifact versions, lineage edges and
key/value metadata, in SQLite or Postgres. `Stores` opens both from one settings object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kstep._settings import Settings
    from kstep.stores.artifacts import ArtifactStore
    from kstep.stores.metadata import MetadataStore


@dataclass
class Stores:
    """An open artifact store and metadata store."""

    artifacts: ArtifactStore
    metadata: MetadataStore

    @classmethod
    def open(cls, settings: Settings) -> Stores:
        """Open the stores the settings point at, creating and migrating them if needed."""
        from kstep.stores.artifacts import open_artifact_store
        from kstep.stores.metadata import MetadataStore

        return cls(open_artifact_store(settings), MetadataStore.open(settings.metadata_url))

"""The metadata store: runs, step runs, artifact versions, lineage and metadata rows."""

from kstep.stores.metadata.records import (
    ArtifactVersionRecord,
    InputEdge,
    NewArtifactVersion,
    RunRecord,
    StepRunRecord,
    utcnow,
)
from kstep.stores.metadata.store import MetadataStore

__all__ = [
    "ArtifactVersionRecord",
    "InputEdge",
    "MetadataStore",
    "NewArtifactVersion",
    "RunRecord",
    "StepRunRecord",
    "utcnow",
]

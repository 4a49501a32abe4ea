"""Materializers: how each family of Python types is saved to and loaded from an artifact store.

Built-ins cover None, bool, int, float, str, bytes, dicts, lists, tuples and sets of those
(JSON), numpy arrays (`.npy`, memory-mapped on load), pandas frames (parquet when pyarrow is
installed), pydantic models and dataclasses. Subclass `Materializer` to add your own; a
subclass registers itself for its `types`. Pickle is used only when allowed by the setting
`KSTEP_ALLOW_PICKLE=true` or asked for by name.
"""

from kstep.materializers._base import (
    Location,
    Materializer,
    materializer_for,
    materializer_version,
    resolve_materializer,
    type_path,
)
from kstep.materializers._builtin import (
    BytesMaterializer,
    JsonMaterializer,
    PickleMaterializer,
    StructuredMaterializer,
)

__all__ = [
    "BytesMaterializer",
    "JsonMaterializer",
    "Location",
    "Materializer",
    "PickleMaterializer",
    "StructuredMaterializer",
    "materializer_for",
    "materializer_version",
    "resolve_materializer",
    "type_path",
]

"""numpy arrays as `.npy` files, memory-mapped when loaded."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from kstep.materializers._base import Materializer

ARRAY_FILE = "array.npy"

# Hashing costs about as much as writing; above this size the artifact version id stands in
# for the content in cache keys, so saving a large array stays close to raw disk speed.
HASH_LIMIT_BYTES = 16 * 1024 * 1024


class NumpyMaterializer(Materializer):
    """numpy arrays (not of dtype object), saved with `np.save`.

    Loading memory-maps the file copy-on-write: the array is usable at once, pages are read
    when touched, and writes to it never reach the stored artifact.
    """

    types = (np.ndarray,)

    @classmethod
    def can_save(cls, value: Any) -> bool:
        return bool(value.dtype != object)

    def save(self, value: np.ndarray) -> None:
        with self.open(ARRAY_FILE, "wb") as file:
            np.save(file, value, allow_pickle=False)

    def load(self, data_type: type) -> np.ndarray:
        array = np.load(self.local_path(ARRAY_FILE), mmap_mode="c", allow_pickle=False)
        return array if array.ndim else np.asarray(array)

    def extract_metadata(self, value: np.ndarray) -> dict[str, Any]:
        return {"shape": list(value.shape), "dtype": str(value.dtype), "nbytes": value.nbytes}

    def content_hash(self, value: np.ndarray) -> str | None:
        if value.nbytes > HASH_LIMIT_BYTES:
            return None
        digest = hashlib.sha256(f"{value.dtype.str}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).data)
        return digest.hexdigest()

    def item_count(self) -> int:
        return int(self.load(np.ndarray).shape[0])

    def load_item(self, index: int) -> Any:
        return np.array(self.load(np.ndarray)[index])

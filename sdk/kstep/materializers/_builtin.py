"""Built-in materializers: JSON values, bytes, pydantic models and dataclasses, pickle."""

from __future__ import annotations

import hashlib
import json
import math
import pickle
from typing import Any

from kstep._errors import ArtifactLoadError, MaterializerError
from kstep.materializers._base import Materializer, type_path

JSON_FILE = "data.json"


def _is_json(value: Any, depth: int = 0) -> bool:
    if depth > 100:
        return False
    if value is None or isinstance(value, bool | int | str):
        return True
    if isinstance(value, float):
        return True
    if isinstance(value, list | tuple | set | frozenset):
        return all(_is_json(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(
            isinstance(key, str) and _is_json(item, depth + 1) for key, item in value.items()
        )
    return False


def _to_json_ready(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return sorted((_to_json_ready(v) for v in value), key=repr)
    if isinstance(value, tuple):
        return [_to_json_ready(v) for v in value]
    if isinstance(value, list):
        return [_to_json_ready(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_json_ready(v) for k, v in value.items()}
    return value


class JsonMaterializer(Materializer):
    """None, bool, int, float, str, and dicts, lists, tuples and sets of them, as JSON.

    Tuples and sets come back as tuples and sets at the top level; nested inside other
    collections they come back as lists. Lists and tuples can be split by `.map`.
    """

    types = (type(None), bool, int, float, str, dict, list, tuple, set, frozenset)

    @classmethod
    def can_save(cls, value: Any) -> bool:
        return _is_json(value)

    def _encode(self, value: Any) -> bytes:
        if isinstance(value, int | str | bool) or value is None:
            return json.dumps(value).encode()
        return json.dumps(_to_json_ready(value), separators=(",", ":")).encode()

    def save(self, value: Any) -> None:
        with self.open(JSON_FILE, "wb") as file:
            file.write(self._encode(value))

    def _read(self) -> Any:
        with self.open(JSON_FILE, "rb") as file:
            raw = file.read()
        try:
            return json.loads(raw)
        except ValueError as error:
            raise ArtifactLoadError(f"artifact at {self.uri} holds invalid JSON: {error}") from None

    def load(self, data_type: type) -> Any:
        value = self._read()
        if data_type in (tuple, set, frozenset) and isinstance(value, list):
            return data_type(value)
        if data_type is float and isinstance(value, int):
            return float(value)
        return value

    def extract_metadata(self, value: Any) -> dict[str, Any]:
        if isinstance(value, bool | int) or value is None:
            return {"value": value}
        if isinstance(value, float):
            return {"value": value} if math.isfinite(value) else {}
        if isinstance(value, str):
            return {"length": len(value)}
        return {"length": len(value)}

    def content_hash(self, value: Any) -> str:
        digest = hashlib.sha256(type_path(type(value)).encode())
        digest.update(self._encode(value))
        return digest.hexdigest()

    def item_count(self) -> int:
        value = self._read()
        if not isinstance(value, list):
            raise MaterializerError(
                f"artifact at {self.uri} holds a {type(value).__name__}, not a sequence; "
                "only lists and tuples can be split into items"
            )
        return len(value)

    def load_item(self, index: int) -> Any:
        value = self._read()
        return value[index]


class BytesMaterializer(Materializer):
    """Raw bytes, stored as they are."""

    types = (bytes, bytearray)

    def save(self, value: bytes) -> None:
        with self.open("data.bin", "wb") as file:
            file.write(value)

    def load(self, data_type: type) -> Any:
        with self.open("data.bin", "rb") as file:
            data = file.read()
        return bytearray(data) if data_type is bytearray else data

    def extract_metadata(self, value: bytes) -> dict[str, Any]:
        return {"size": len(value)}

    def content_hash(self, value: bytes) -> str:
        return hashlib.sha256(bytes(value)).hexdigest()


class StructuredMaterializer(Materializer):
    """Pydantic models and dataclasses, as JSON validated back into their class."""

    def save(self, value: Any) -> None:
        with self.open(JSON_FILE, "wb") as file:
            file.write(self._encode(value))

    def _encode(self, value: Any) -> bytes:
        from pydantic import TypeAdapter

        try:
            if hasattr(value, "model_dump_json"):
                return bytes(value.model_dump_json().encode())
            return TypeAdapter(type(value)).dump_json(value)
        except Exception as error:
            raise MaterializerError(
                f"{type(value).__qualname__} cannot be stored as JSON ({error}); register a "
                "Materializer for it or allow pickle"
            ) from None

    def load(self, data_type: type) -> Any:
        from pydantic import TypeAdapter

        with self.open(JSON_FILE, "rb") as file:
            raw = file.read()
        if hasattr(data_type, "model_validate_json"):
            return data_type.model_validate_json(raw)
        return TypeAdapter(data_type).validate_json(raw)

    def content_hash(self, value: Any) -> str:
        digest = hashlib.sha256(type_path(type(value)).encode())
        digest.update(self._encode(value))
        return digest.hexdigest()


class PickleMaterializer(Materializer):
    """Any picklable value. Used only when allowed: loading a pickle runs arbitrary code."""

    def save(self, value: Any) -> None:
        with self.open("data.pkl", "wb") as file:
            pickle.dump(value, file, protocol=pickle.HIGHEST_PROTOCOL)

    def load(self, data_type: type) -> Any:
        with self.open("data.pkl", "rb") as file:
            try:
                return pickle.load(file)
            except Exception as error:
                raise ArtifactLoadError(
                    f"artifact at {self.uri} could not be unpickled: {error}"
                ) from None

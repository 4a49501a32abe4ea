"""Materializers: built-in round trips, user materializers, and the artifact's boundaries."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import pydantic
import pytest

from kstep import Materializer, RunFailed, pipeline, step
from kstep._errors import ArtifactPathError, MaterializerError
from kstep.materializers import JsonMaterializer, materializer_for
from kstep.stores.artifacts import LocalArtifactStore


@dataclasses.dataclass
class Point:
    x: float
    y: float
    label: str = ""


class Settings(pydantic.BaseModel):
    name: str
    layers: list[int]


def store_and_load(value: Any) -> tuple[Any, Any]:
    """Return a step output's loaded value and its artifact version."""

    @step(enable_cache=False)
    def emit() -> Any:
        return value

    @pipeline
    def roundtrip() -> None:
        emit()

    version = roundtrip().steps["emit"].outputs["output"]
    return version.load(), version


@pytest.mark.parametrize(
    ("value", "materializer", "data_type"),
    [
        (None, "JsonMaterializer", "builtins.NoneType"),
        (True, "JsonMaterializer", "builtins.bool"),
        (42, "JsonMaterializer", "builtins.int"),
        (2.5, "JsonMaterializer", "builtins.float"),
        ("text é", "JsonMaterializer", "builtins.str"),
        ({"a": [1, {"b": None}]}, "JsonMaterializer", "builtins.dict"),
        ([1, "two", 3.0], "JsonMaterializer", "builtins.list"),
        ((1, 2), "JsonMaterializer", "builtins.tuple"),
        ({3, 1, 2}, "JsonMaterializer", "builtins.set"),
        (b"\x00\xffbytes", "BytesMaterializer", "builtins.bytes"),
        (Point(1.0, 2.0, "p"), "StructuredMaterializer", f"{__name__}.Point"),
        (Settings(name="net", layers=[3, 4]), "PydanticMaterializer", f"{__name__}.Settings"),
    ],
)
def test_materializer_round_trips_a_builtin_type(
    value: Any, materializer: str, data_type: str
) -> None:
    loaded, version = store_and_load(value)

    assert loaded == value
    assert type(loaded) is type(value)
    assert version.materializer.rsplit(".", 1)[1] == materializer
    assert version.data_type == data_type


def test_materializer_round_trips_a_numpy_array_memory_mapped() -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)

    loaded, version = store_and_load(array)

    assert isinstance(loaded, np.memmap)
    np.testing.assert_array_equal(loaded, array)
    assert version.metadata == {"shape": [3, 4], "dtype": "float32", "nbytes": 48}
    # The memory map is copy-on-write: changing it never changes the stored artifact.
    loaded[0, 0] = 99
    np.testing.assert_array_equal(version.load(), array)


def test_materializer_round_trips_pandas_frames_and_series() -> None:
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})

    loaded_frame, version = store_and_load(frame)
    loaded_series, _ = store_and_load(frame["a"])

    pd.testing.assert_frame_equal(loaded_frame, frame)
    pd.testing.assert_series_equal(loaded_series, frame["a"])
    assert version.metadata == {"shape": [3, 2], "columns": ["a", "b"]}


def test_materializer_metadata_is_stored_with_the_artifact_version() -> None:
    _, version = store_and_load([1, 2, 3])

    assert version.metadata == {"length": 3}
    assert version.content_hash is not None


def test_materializer_refuses_a_value_it_cannot_store() -> None:
    class Model:
        pass

    @step
    def train() -> Any:
        return Model()

    @pipeline
    def training() -> None:
        train()

    with pytest.raises(RunFailed) as caught:
        training()

    step_run = caught.value.run.steps["train"]
    assert step_run.error_type == "kstep._errors.MaterializerError"
    assert step_run.error_message == (
        f"output 'output' of step 'train' is a "
        f"{__name__}.test_materializer_refuses_a_value_it_cannot_store.<locals>.Model, which no "
        "materializer can store; register a Materializer subclass with types=(Model,), pass "
        "output_materializers={'output': ...} to @step, or set KSTEP_ALLOW_PICKLE=true for "
        "values you trust"
    )
    assert step_run.outputs == {}


class Handmade:
    def __init__(self, value: int) -> None:
        self.value = value


def test_materializer_pickles_only_when_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KSTEP_ALLOW_PICKLE", "true")

    loaded, version = store_and_load(Handmade(5))

    assert loaded.value == 5
    assert version.materializer == "kstep.materializers._builtin.PickleMaterializer"


class Temperature:
    def __init__(self, degrees: float) -> None:
        self.degrees = degrees


class TemperatureMaterializer(Materializer):
    types = (Temperature,)

    def save(self, value: Temperature) -> None:
        with self.open("reading/degrees.txt", "w") as file:
            file.write(repr(value.degrees))

    def load(self, data_type: type) -> Temperature:
        with self.open("reading/degrees.txt", "r") as file:
            return data_type(float(file.read()))

    def extract_metadata(self, value: Temperature) -> dict[str, Any]:
        return {"freezing": value.degrees <= 0}


def test_materializer_subclass_registers_for_its_types() -> None:
    loaded, version = store_and_load(Temperature(-3.5))

    assert isinstance(loaded, Temperature) and loaded.degrees == -3.5
    assert version.materializer == f"{__name__}.TemperatureMaterializer"
    assert version.metadata == {"freezing": True}
    assert (Path(version.uri) / "reading" / "degrees.txt").read_text() == "-3.5"


def test_materializer_subclass_wins_over_a_builtin_for_the_same_type() -> None:
    # Registers UpperStrings for str (a reload registers it again if an earlier run imported it).
    importlib.reload(importlib.import_module("sdk.materializers_override"))

    loaded, version = store_and_load("quiet")

    assert loaded == "QUIET"
    assert version.materializer == "sdk.materializers_override.UpperStrings"


class CountOnly(JsonMaterializer):
    """Stores the length of a sequence; registered for no type, so used only when named."""

    types = ()

    def save(self, value: Any) -> None:
        super().save(len(value))


@step(output_materializers={"rows": CountOnly}, enable_cache=False)
def load_rows() -> Annotated[list[int], "rows"]:
    return [1, 2, 3]


def test_materializer_given_for_an_output_overrides_the_registry() -> None:
    @pipeline
    def counted() -> None:
        load_rows()

    version = counted().steps["load_rows"].outputs["rows"]

    assert version.load() == 3
    assert version.materializer == f"{__name__}.CountOnly"


def test_materializer_rejects_a_non_class_in_types() -> None:
    with pytest.raises(MaterializerError) as caught:

        class Broken(Materializer):
            types = ("str",)  # type: ignore[assignment]

    assert str(caught.value) == (
        "materializer 'test_materializer_rejects_a_non_class_in_types.<locals>.Broken' lists "
        "'str' in types; types must be classes"
    )


@pytest.mark.parametrize(
    "path", ["../escape.txt", "/etc/passwd", "parts/../../escape.txt", "", ".", ".."]
)
def test_materializer_open_refuses_paths_outside_the_artifact(tmp_path: Path, path: str) -> None:
    store = LocalArtifactStore(str(tmp_path))
    staged = store.stage("outside", "v1")
    materializer = JsonMaterializer(staged)

    with pytest.raises(ArtifactPathError) as caught:
        materializer.open(path, "wb")

    assert str(caught.value) == (
        f"path {path!r} is outside the artifact's location {staged.uri}; materializers may only "
        "use relative paths inside it, such as 'data.json' or 'parts/0.bin'"
    )
    assert sorted(os.listdir(tmp_path)) == ["artifacts"]


def test_materializer_can_write_nested_paths_inside_the_artifact(tmp_path: Path) -> None:
    store = LocalArtifactStore(str(tmp_path))
    staged = store.stage("nested", "v1")

    with JsonMaterializer(staged).open("parts/a/b.bin", "wb") as file:
        file.write(b"ok")
    uri = staged.commit()

    assert (Path(uri) / "parts" / "a" / "b.bin").read_bytes() == b"ok"


def test_materializer_cannot_write_into_a_committed_artifact(tmp_path: Path) -> None:
    store = LocalArtifactStore(str(tmp_path))
    staged = store.stage("done", "v1")
    JsonMaterializer(staged).save([1])
    uri = staged.commit()

    with pytest.raises(ArtifactPathError) as caught:
        JsonMaterializer(store.location(uri)).open("data.json", "wb")

    assert str(caught.value) == f"artifact {uri} is committed and cannot be written"
    assert json.loads((Path(uri) / "data.json").read_text()) == [1]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, JsonMaterializer),
        ([1, {"a": None}], JsonMaterializer),
        ([1, object()], None),
        ({1: "int keys"}, None),
    ],
)
def test_materializer_for_checks_the_whole_value(value: Any, expected: Any) -> None:
    assert materializer_for(value) is expected


def test_materializer_splits_json_sequences_into_items(tmp_path: Path) -> None:
    store = LocalArtifactStore(str(tmp_path))
    staged = store.stage("items", "v1")
    JsonMaterializer(staged).save([[1, 2], "b", {"c": 3}])
    location = store.location(staged.commit())

    materializer = JsonMaterializer(location)

    assert JsonMaterializer.splittable()
    assert materializer.item_count() == 3
    assert [materializer.load_item(i) for i in range(3)] == [[1, 2], "b", {"c": 3}]


@step(output_materializers=CountOnly, enable_cache=False)
def two_lists() -> tuple[Annotated[list[int], "left"], Annotated[list[int], "right"]]:
    return [1], [1, 2]


def test_materializer_given_once_applies_to_every_output() -> None:
    @pipeline
    def counted_twice() -> None:
        two_lists()

    outputs = counted_twice().steps["two_lists"].outputs

    assert {name: version.load() for name, version in outputs.items()} == {"left": 1, "right": 2}

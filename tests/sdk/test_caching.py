"""Caching: what a cache hit records, and everything that must change the cache key."""

from __future__ import annotations

import importlib
import shutil
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from kstep import Materializer, RunFailed, pipeline, step


def test_cache_hit_reuses_the_original_artifacts_without_running_the_body() -> None:
    calls: list[int] = []

    @step
    def expensive(rows: int) -> list[int]:
        calls.append(rows)
        return list(range(rows))

    @pipeline
    def cached(rows: int) -> None:
        expensive(rows)

    first = cached(3).steps["expensive"]
    second = cached(3).steps["expensive"]

    assert calls == [3]
    assert (first.status, second.status) == ("completed", "cached")
    assert second.id != first.id
    assert second.cache_key == first.cache_key
    assert second.original_step_run_id == first.id
    assert second.outputs["output"].id == first.outputs["output"].id
    assert second.outputs["output"].load() == [0, 1, 2]


def test_cache_key_changes_when_a_parameter_changes() -> None:
    calls: list[int] = []

    @step
    def expensive(rows: int) -> int:
        calls.append(rows)
        return rows

    @pipeline
    def cached(rows: int) -> None:
        expensive(rows)

    keys = [cached(rows).steps["expensive"].cache_key for rows in (1, 2, 1)]

    assert calls == [1, 2]
    assert keys[0] != keys[1]
    assert keys[0] == keys[2]


def test_cache_key_changes_when_the_step_body_changes() -> None:
    def make_step(version: int) -> Any:
        if version == 1:

            @step
            def transform(value: int) -> int:
                return value + 1

        else:

            @step
            def transform(value: int) -> int:
                return value + 2

        return transform

    def run_with(version: int) -> Any:
        transform = make_step(version)

        @pipeline
        def changing() -> None:
            transform(1)

        return changing().steps["transform"]

    first, second, third = run_with(1), run_with(2), run_with(1)

    assert (first.status, second.status, third.status) == ("completed", "completed", "cached")
    assert second.outputs["output"].load() == 3
    assert first.cache_key != second.cache_key


def test_cache_key_follows_the_content_of_an_input_not_its_version() -> None:
    calls: list[int] = []

    @step(enable_cache=False)
    def source(value: int) -> int:
        return value

    @step
    def consume(value: int) -> int:
        calls.append(value)
        return value * 10

    @pipeline
    def flow(value: int) -> None:
        consume(source(value))

    runs = [flow(value) for value in (1, 1, 2)]

    # The second run stored a new version of the same content, so consume was a hit.
    assert [r.steps["source"].outputs["output"].version for r in runs] == [1, 2, 3]
    assert [r.steps["consume"].status for r in runs] == ["completed", "cached", "completed"]
    assert calls == [1, 2]


class Opaque:
    def __init__(self, value: int) -> None:
        self.value = value


class OpaqueMaterializer(Materializer):
    """Stores an Opaque without a content hash: its version id stands in for its content."""

    types = (Opaque,)

    def save(self, value: Opaque) -> None:
        with self.open("value.txt", "w") as file:
            file.write(str(value.value))

    def load(self, data_type: type) -> Opaque:
        with self.open("value.txt", "r") as file:
            return Opaque(int(file.read()))


def test_cache_key_uses_the_version_of_an_input_without_a_content_hash() -> None:
    @step(enable_cache=False)
    def make() -> Opaque:
        return Opaque(1)

    @step
    def use(thing: Opaque) -> int:
        return thing.value

    @pipeline
    def opaque_flow() -> None:
        use(make())

    statuses = [opaque_flow().steps["use"].status for _ in range(2)]

    assert statuses == ["completed", "completed"]


MATERIALIZER_MODULE = """
from kstep import Materializer, pipeline, step


class Celsius:
    def __init__(self, degrees: float) -> None:
        self.degrees = degrees


class CelsiusMaterializer(Materializer):
    types = (Celsius,)

    def save(self, value: Celsius) -> None:
        with self.open("degrees.txt", "w") as file:
            file.write({format!r}.format(value.degrees))

    def load(self, data_type: type) -> Celsius:
        with self.open("degrees.txt", "r") as file:
            return Celsius(float(file.read()))


@step
def measure() -> Celsius:
    return Celsius(21.5)


@pipeline
def weather() -> None:
    measure()
"""


def test_cache_key_changes_when_the_materializer_code_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "weather_with_materializer.py"
    source.write_text(textwrap.dedent(MATERIALIZER_MODULE.format(format="{}")))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        module = importlib.import_module("weather_with_materializer")
        first = module.weather().steps["measure"]
        module = importlib.reload(module)
        unchanged = module.weather().steps["measure"]
        source.write_text(textwrap.dedent(MATERIALIZER_MODULE.format(format="{:.3f}")))
        module = importlib.reload(module)
        changed = module.weather().steps["measure"]
    finally:
        sys.modules.pop("weather_with_materializer", None)

    assert (first.status, unchanged.status, changed.status) == ("completed", "cached", "completed")
    assert changed.cache_key != first.cache_key
    assert changed.outputs["output"].load().degrees == 21.5


def test_cache_hit_whose_artifacts_are_gone_is_a_miss() -> None:
    calls: list[int] = []

    @step
    def expensive() -> list[int]:
        calls.append(1)
        return [1, 2]

    @pipeline
    def fragile() -> None:
        expensive()

    first = fragile().steps["expensive"]
    shutil.rmtree(first.outputs["output"].uri)
    second = fragile().steps["expensive"]

    assert second.status == "completed"
    assert calls == [1, 1]
    assert second.outputs["output"].load() == [1, 2]
    assert second.outputs["output"].version == 2


@pytest.mark.parametrize(
    ("pipeline_cache", "step_cache", "expected"),
    [
        (True, None, "cached"),
        (False, None, "completed"),
        (True, False, "completed"),
        (False, True, "cached"),
    ],
)
def test_cache_is_switched_by_pipeline_and_step_enable_cache(
    pipeline_cache: bool, step_cache: bool | None, expected: str
) -> None:
    @step(enable_cache=step_cache)
    def compute() -> int:
        return 1

    @pipeline(enable_cache=pipeline_cache)
    def switched() -> None:
        compute()

    switched()
    second = switched().steps["compute"]

    assert second.status == expected


def test_cache_expires_after_the_given_time() -> None:
    @step(cache_expires_after=0.5)
    def fresh() -> int:
        return 1

    @pipeline
    def expiring() -> None:
        fresh()

    statuses = [expiring().steps["fresh"].status for _ in range(2)]
    time.sleep(0.6)
    statuses.append(expiring().steps["fresh"].status)

    assert statuses == ["completed", "cached", "completed"]


def test_cache_never_reuses_a_failed_step() -> None:
    calls: list[int] = []

    @step
    def unreliable() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first call fails")
        return 1

    @pipeline
    def retried_by_hand() -> None:
        unreliable()

    with pytest.raises(RunFailed):
        retried_by_hand()
    second = retried_by_hand().steps["unreliable"]

    assert second.status == "completed"
    assert calls == [1, 1]


def test_cache_hit_records_the_inputs_it_was_given() -> None:
    @step(enable_cache=False)
    def source() -> int:
        return 5

    @step
    def double(value: int) -> int:
        return value * 2

    @pipeline
    def lineage() -> None:
        double(source())

    lineage()
    second = lineage()

    cached = second.steps["double"]
    assert cached.status == "cached"
    assert cached.inputs["value"].id == second.steps["source"].outputs["output"].id

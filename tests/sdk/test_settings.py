"""Settings: where runs are stored and how the local engine runs them, from KSTEP_* variables."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from kstep import Client, pipeline, step
from kstep._settings import Settings


@step(enable_cache=False)
def produce(value: int) -> int:
    return value


@pipeline
def single(value: int = 1) -> None:
    produce(value)


def test_settings_default_to_files_under_kstep_home(kstep_home: Path) -> None:
    settings = Settings()

    assert settings.home == str(kstep_home)
    assert settings.metadata_url == f"sqlite:///{kstep_home}/kstep.db"
    assert settings.artifact_root == str(kstep_home)
    assert (settings.inline_workers, settings.isolated_workers) == (16, 4)
    assert settings.allow_pickle is False


def test_settings_place_metadata_and_artifacts_where_the_variables_say(
    tmp_path: Path, kstep_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KSTEP_METADATA_URL", f"sqlite:///{tmp_path / 'meta' / 'runs.db'}")
    monkeypatch.setenv("KSTEP_ARTIFACT_ROOT", str(tmp_path / "store"))

    run = single(5)

    uri = run.steps["produce"].outputs["output"].uri
    assert uri.startswith(str(tmp_path / "store" / "artifacts") + "/")
    assert (tmp_path / "meta" / "runs.db").exists()
    assert not (kstep_home / "kstep.db").exists()
    assert Client().get_run(run.id).steps["produce"].outputs["output"].load() == 5


def test_settings_inline_workers_bound_how_many_inline_steps_run_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KSTEP_INLINE_WORKERS", "2")
    running = 0
    most = 0
    lock = threading.Lock()

    @step(enable_cache=False)
    def busy(index: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return index

    @pipeline
    def crowd() -> None:
        for index in range(6):
            busy(index)

    crowd()

    assert most == 2


def test_settings_come_from_a_config_file_when_the_environment_has_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "kstep.toml"
    config.write_text('inline_workers = 3\nartifact_root = "/srv/artifacts"\n')
    monkeypatch.setenv("KSTEP_CONFIG_FILE", str(config))
    monkeypatch.setenv("KSTEP_INLINE_WORKERS", "5")

    settings = Settings()

    assert settings.inline_workers == 5
    assert settings.artifact_root == "/srv/artifacts"


def test_settings_are_handed_to_step_processes(tmp_path: Path) -> None:
    settings = Settings(
        home=str(tmp_path),
        metadata_url="postgresql+psycopg://kstep@db/kstep",
        artifact_root="s3://bucket/runs",
        s3_endpoint_url="http://minio:9000",
        allow_pickle=True,
    )

    environment = settings.child_environment()

    assert environment == {
        "KSTEP_HOME": str(tmp_path),
        "KSTEP_METADATA_URL": "postgresql+psycopg://kstep@db/kstep",
        "KSTEP_ARTIFACT_ROOT": "s3://bucket/runs",
        "KSTEP_ALLOW_PICKLE": "true",
        "KSTEP_ECHO_STEP_LOGS": "true",
        "KSTEP_S3_ENDPOINT_URL": "http://minio:9000",
    }
    assert Settings(**{k.removeprefix("KSTEP_").lower(): v for k, v in environment.items()}) == (
        settings
    )

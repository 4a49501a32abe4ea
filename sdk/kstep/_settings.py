"""Settings of a kstep process, read once from `KSTEP_*` environment variables.

An optional TOML file named by `KSTEP_CONFIG_FILE` supplies values the environment does not.
Credentials for S3 come from boto3's own chain (`AWS_ACCESS_KEY_ID`, ...), never from here.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class Settings(BaseSettings):
    """Where runs are stored and how the local engine runs them."""

    model_config = SettingsConfigDict(env_prefix="KSTEP_", extra="ignore", frozen=True)

    home: str = Field(
        default="~/.kstep",
        description="Directory for the default SQLite database, artifacts, logs and caches.",
    )
    metadata_url: str = Field(
        default="",
        description="SQLAlchemy URL of the metadata store; default: SQLite at <home>/kstep.db. "
        "Postgres: postgresql+psycopg://user:password@host/db.",
    )
    artifact_root: str = Field(
        default="",
        description="Artifact store root: a directory, or s3://bucket/prefix; default: <home>.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="Endpoint of an S3-compatible server; unset for AWS S3."
    )
    s3_region: str | None = Field(default=None, description="S3 region name.")
    inline_workers: int = Field(
        default=16, ge=1, le=1024, description="Threads that run inline steps concurrently."
    )
    isolated_workers: int = Field(
        default=4, ge=1, le=1024, description="Isolated steps (subprocesses) run at once."
    )
    allow_pickle: bool = Field(
        default=False,
        description="Store values no materializer handles with pickle. Loading a pickle runs "
        "code, so only enable this for artifacts you trust.",
    )
    echo_step_logs: bool = Field(
        default=True, description="Also print step output to this process's console."
    )

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        home = os.path.abspath(os.path.expanduser(self.home))
        object.__setattr__(self, "home", home)
        if not self.metadata_url:
            object.__setattr__(self, "metadata_url", f"sqlite:///{home}/kstep.db")
        if not self.artifact_root:
            object.__setattr__(self, "artifact_root", home)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("KSTEP_CONFIG_FILE")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    def child_environment(self) -> dict[str, Any]:
        """Environment variables that give a child process these same settings."""
        values = {
            "KSTEP_HOME": self.home,
            "KSTEP_METADATA_URL": self.metadata_url,
            "KSTEP_ARTIFACT_ROOT": self.artifact_root,
            "KSTEP_ALLOW_PICKLE": str(self.allow_pickle).lower(),
            "KSTEP_ECHO_STEP_LOGS": str(self.echo_step_logs).lower(),
        }
        if self.s3_endpoint_url:
            values["KSTEP_S3_ENDPOINT_URL"] = self.s3_endpoint_url
        if self.s3_region:
            values["KSTEP_S3_REGION"] = self.s3_region
        return values

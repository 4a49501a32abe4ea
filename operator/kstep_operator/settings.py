"""Settings of the operator process, read once from `KSTEP_OPERATOR_*` environment variables.

The metadata store and artifact store come from the usual `KSTEP_*` settings
(`kstep._settings.Settings`), which on a cluster are filled from a Secret.
"""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    """How the operator watches, schedules and runs steps."""

    model_config = SettingsConfigDict(env_prefix="KSTEP_OPERATOR_", extra="ignore", frozen=True)

    namespaces: list[str] = Field(
        default_factory=list,
        description="Namespaces to watch; empty watches the whole cluster.",
    )
    image: str = Field(
        default="kstep:latest",
        description="Image of step Jobs (and orchestrator pods) when a run names none.",
    )
    image_pull_policy: str = Field(default="IfNotPresent", description="Of step containers.")
    store_secret: str = Field(
        default="kstep-stores",
        description="Secret whose keys become the environment of step pods (KSTEP_* store "
        "settings and AWS credentials) when a run names none.",
    )
    step_service_account: str = Field(
        default="kstep-step",
        description="Service account of step pods when a run names none.",
    )
    orchestrator_service_account: str = Field(
        default="kstep-orchestrator",
        description="Service account of dynamic runs' orchestrator pods when a run names none.",
    )
    orchestrator_restart_limit: int = Field(
        default=6,
        ge=0,
        le=100,
        description="Times an orchestrator pod may crash or vanish before its run fails.",
    )
    max_active_steps: int = Field(
        default=500, ge=1, description="StepRuns running at once across all runs."
    )
    reconcile_workers: int = Field(
        default=8, ge=1, le=256, description="Threads that reconcile runs and steps."
    )
    inline_workers: int = Field(
        default=16, ge=1, le=1024, description="Threads per inline worker process."
    )
    executor_socket: str | None = Field(
        default=None,
        description="Unix socket of an inline executor started separately (in its own "
        "container); unset: the operator starts one as a child process.",
    )
    metrics_port: int = Field(default=8080, ge=0, le=65535, description="0 disables /metrics.")
    metrics_host: str = Field(default="0.0.0.0", description="Address /metrics listens on.")
    counts_interval_seconds: float = Field(
        default=1.0,
        ge=0,
        description="Least time between two updates of a running PipelineRun's step counts "
        "(changes in between are written together); a run's final counts are written at once.",
    )
    sweep_seconds: float = Field(
        default=2.0, gt=0, description="Period of the sweep for timeouts, TTLs and lost Jobs."
    )
    lost_job_grace_seconds: float = Field(
        default=10.0,
        ge=0,
        description="How long a running step's Job may be missing from the watch before it "
        "is looked up and, if gone, the step fails.",
    )
    api_qps_workers: int = Field(
        default=16, ge=1, le=256, description="Concurrent connections to the API server."
    )
    leader_election: bool = Field(
        default=False, description="Reconcile only while holding the leader Lease."
    )
    lease_name: str = Field(default="kstep-operator", description="Name of the leader Lease.")
    lease_namespace: str | None = Field(
        default=None, description="Namespace of the Lease; default: the pod's namespace."
    )
    lease_duration_seconds: float = Field(
        default=15.0,
        gt=0,
        description="Seconds a standby waits, after the Lease last changed, before it takes "
        "the Lease over.",
    )
    lease_renew_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Seconds between the leader's renewals. A leader that could not renew for "
        "the lease duration minus this period stops.",
    )
    identity: str | None = Field(
        default=None,
        description="This replica's identity for the Lease; default: the host name plus a "
        "random suffix per process.",
    )
    log_format: str = Field(default="text", pattern="^(text|json)$")
    profile_path: str | None = Field(
        default=None,
        description="Profile every reconcile (cProfile, all worker threads) and write the "
        "statistics to this file when the operator stops; for finding where time goes.",
    )

    @model_validator(mode="after")
    def _check_lease_periods(self) -> OperatorSettings:
        # A leader gives up after `duration - renew` without renewing; that must leave room
        # for at least one retry after a failed renewal.
        if 2 * self.lease_renew_seconds > self.lease_duration_seconds:
            raise ValueError(
                f"KSTEP_OPERATOR_LEASE_RENEW_SECONDS is {self.lease_renew_seconds!r} and "
                f"KSTEP_OPERATOR_LEASE_DURATION_SECONDS is {self.lease_duration_seconds!r}; "
                "the lease duration must be at least twice the renew period"
            )
        return self

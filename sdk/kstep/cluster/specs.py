"""Spec models of the `PipelineRun` and `StepRun` custom resources (group `kstep.dev`).

A PipelineRun is a thin parent: what to run (for a static pipeline its compiled DAG, for a
dynamic one its entrypoint), with which code, parameters and limits, plus a status of
counts and conditions. Each step execution is its own StepRun, with its inputs resolved to
artifact versions. The CRD YAML in `crds/` is generated from these models
(`python -m kstep.cluster.crds`), and a test fails when the two drift apart.

To keep a 2,000-step PipelineRun far below etcd's object size limit, what a step definition
shares across its invocations (function, code version, options) is stored once under
`spec.definitions`, and each invocation in `spec.steps` only names its definition.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

GROUP = "kstep.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Kubernetes-style names and the references kstep stores.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
INVOCATION_ID = r"^[A-Za-z_][A-Za-z0-9_.:-]{0,252}$"
STEP_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$"
FUNCTION_REFERENCE = r"^[A-Za-z_][A-Za-z0-9_./-]*(\.py)?:[A-Za-z_][A-Za-z0-9_.]*$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|E|Ei|P|Pi)?$"

Phase = Literal[
    "pending", "running", "completed", "failed", "cached", "skipped", "cancelled", "retrying"
]
RunPhase = Literal["pending", "running", "completed", "failed", "cancelled"]
Runtime = Literal["inline", "isolated"]
ExecutionMode = Literal["continue_on_failure", "stop_on_failure", "fail_fast"]


class _Spec(BaseModel):
    """Base of every spec model: unknown fields are errors, names are camelCase."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


JsonValue = Annotated[Any, Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})]


# ------------------------------------------------------------------ shared parts


class RetrySpec(_Spec):
    """Retry policy: attempts after the first, the wait before the first retry, its growth."""

    max_retries: int = Field(0, alias="maxRetries", ge=0, le=100)
    delay_seconds: float = Field(0.0, alias="delaySeconds", ge=0, le=86_400)
    backoff: float = Field(1.0, ge=1, le=100)


class ResourcesSpec(_Spec):
    """CPU, memory and other resources of a step's pod (Kubernetes quantities)."""

    requests: dict[str, Annotated[str, Field(pattern=QUANTITY)]] = Field(default_factory=dict)
    limits: dict[str, Annotated[str, Field(pattern=QUANTITY)]] = Field(default_factory=dict)


class Toleration(_Spec):
    """A pod toleration."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(None, alias="tolerationSeconds")


class PodSpecOverrides(_Spec):
    """Where and how an isolated step's pod runs."""

    resources: ResourcesSpec | None = None
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    service_account_name: str | None = Field(
        None, alias="serviceAccountName", pattern=DNS_LABEL, max_length=253
    )


class CodeSpec(_Spec):
    """The user's code: an image that contains it, or a content-addressed archive."""

    image: str | None = Field(None, max_length=512)
    archive: str | None = Field(
        None, max_length=1024, description="URI of a .tar.gz of the code in the artifact store"
    )
    archive_sha256: str | None = Field(None, alias="archiveSha256", pattern=r"^[0-9a-f]{64}$")


class Condition(_Spec):
    """A standard Kubernetes condition."""

    type: str = Field(max_length=64)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field("", max_length=128)
    message: str = Field("", max_length=4096)
    last_transition_time: str | None = Field(None, alias="lastTransitionTime")
    observed_generation: int | None = Field(None, alias="observedGeneration")


class OutputRefSpec(_Spec):
    """An output of another invocation of the same run."""

    step: str = Field(pattern=INVOCATION_ID, description="invocation id of the producer")
    output: str = Field(pattern=STEP_NAME)


class InputItemSpec(_Spec):
    """One item of a list input: a literal, an upstream output, or an artifact version."""

    param: JsonValue = None
    output: OutputRefSpec | None = None
    artifact: str | None = Field(None, pattern=r"^[0-9a-f]{32}$")
    item: int | None = Field(None, ge=0)


class InputSpec(InputItemSpec):
    """An input: as an item, or a list of items."""

    list_: list[InputItemSpec] | None = Field(None, alias="list", max_length=100_000)


# ------------------------------------------------------------------ PipelineRun


class StepDefinitionSpec(_Spec):
    """What every invocation of one step definition shares."""

    step: str = Field(pattern=STEP_NAME, description="the step's name")
    function: str = Field(pattern=FUNCTION_REFERENCE, max_length=512)
    source_hash: str = Field(alias="sourceHash", pattern=r"^[0-9a-f]{64}$")
    outputs: dict[str, str] = Field(
        default_factory=dict,
        description="output name -> declared materializer (key@version), or '' if chosen "
        "at run time",
    )
    runtime: Runtime = "inline"
    enable_cache: bool | None = Field(None, alias="enableCache")
    cache_expires_after_seconds: float | None = Field(None, alias="cacheExpiresAfterSeconds", gt=0)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    timeout_seconds: int | None = Field(None, alias="timeoutSeconds", gt=0)
    pod: PodSpecOverrides | None = None
    options: dict[str, JsonValue] = Field(
        default_factory=dict, description="the step's options as the SDK records them"
    )


class InvocationSpec(_Spec):
    """One invocation in a static pipeline's DAG."""

    id: str = Field(pattern=INVOCATION_ID)
    definition: str = Field(description="key of its entry in spec.definitions")
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    after: list[str] = Field(default_factory=list)


class PipelineRunSpec(_Spec):
    """What a PipelineRun runs, with which code and parameters, and within which limits."""

    pipeline_name: str = Field(alias="pipelineName", pattern=STEP_NAME)
    mode: Literal["static", "dynamic"] = "static"
    code: CodeSpec = Field(default_factory=CodeSpec)
    parameters: dict[str, JsonValue] = Field(default_factory=dict)
    definitions: dict[str, StepDefinitionSpec] = Field(default_factory=dict)
    steps: list[InvocationSpec] = Field(default_factory=list, max_length=20_000)
    entrypoint: str | None = Field(None, pattern=FUNCTION_REFERENCE)
    execution_mode: ExecutionMode | None = Field(None, alias="executionMode")
    enable_cache: bool = Field(True, alias="enableCache")
    parallelism: int = Field(32, ge=1, le=10_000)
    timeout_seconds: int | None = Field(None, alias="timeoutSeconds", gt=0)
    ttl_seconds_after_finished: int | None = Field(None, alias="ttlSecondsAfterFinished", ge=0)
    service_account_name: str | None = Field(None, alias="serviceAccountName", pattern=DNS_LABEL)
    store_secret: str | None = Field(
        None,
        alias="storeSecret",
        pattern=DNS_LABEL,
        description="Secret whose keys become the environment of step pods (KSTEP_* settings "
        "and AWS credentials); default: the operator's",
    )
    status: Literal["Cancelled"] | None = Field(
        None, description="set to Cancelled to stop the run"
    )


class PipelineRunStatus(_Spec):
    """Observed state of a PipelineRun: phase, conditions, counts and times."""

    phase: RunPhase | None = None
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = Field(None, alias="observedGeneration")
    start_time: str | None = Field(None, alias="startTime")
    completion_time: str | None = Field(None, alias="completionTime")
    run_id: str | None = Field(None, alias="runId")
    step_counts: dict[str, int] = Field(default_factory=dict, alias="stepCounts")
    failed_step: str | None = Field(None, alias="failedStep")
    message: str | None = Field(None, max_length=4096)
    orchestrator_job: str | None = Field(
        None, alias="orchestratorJob", description="the Job running a dynamic run's function"
    )


# ------------------------------------------------------------------ StepRun


class StepRunSpec(_Spec):
    """One invocation to execute, with its inputs resolved to artifact versions.

    `executor` says who runs its attempts: the operator (static runs, and isolated steps of
    dynamic runs) or a dynamic run's orchestrator (its inline steps).
    """

    pipeline_run: str = Field(alias="pipelineRun", pattern=DNS_LABEL, max_length=253)
    run_id: str = Field(alias="runId", pattern=r"^[0-9a-f]{32}$")
    invocation_id: str = Field(alias="invocationId", pattern=INVOCATION_ID)
    definition: StepDefinitionSpec
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    upstream: list[str] = Field(default_factory=list)
    cache_key: str | None = Field(None, alias="cacheKey", pattern=r"^[0-9a-f]{64}$")
    code: CodeSpec = Field(default_factory=CodeSpec)
    store_secret: str | None = Field(None, alias="storeSecret", pattern=DNS_LABEL)
    service_account_name: str | None = Field(None, alias="serviceAccountName", pattern=DNS_LABEL)
    executor: Literal["operator", "orchestrator"] = "operator"
    input_fingerprint: str | None = Field(
        None,
        alias="inputFingerprint",
        pattern=r"^[0-9a-f]{64}$",
        description="hash of the resolved inputs, to match a replayed call to this StepRun",
    )


class StepRunStatus(_Spec):
    """Observed state of a StepRun."""

    phase: Phase | None = None
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = Field(None, alias="observedGeneration")
    attempts: int = Field(0, ge=0)
    step_run_id: str | None = Field(None, alias="stepRunId", description="metadata store id")
    job_name: str | None = Field(None, alias="jobName")
    outputs: dict[str, str] = Field(
        default_factory=dict, description="output name -> artifact version id"
    )
    cached: bool = False
    start_time: str | None = Field(None, alias="startTime")
    completion_time: str | None = Field(None, alias="completionTime")
    retry_at: str | None = Field(
        None, alias="retryAt", description="when the next attempt starts (phase retrying)"
    )
    reason: str | None = Field(None, max_length=128)
    message: str | None = Field(None, max_length=4096)
    error_type: str | None = Field(None, alias="errorType", max_length=256)
    logs_uri: str | None = Field(None, alias="logsUri", max_length=2048)


# Exit codes of the orchestrator (`kstep-orchestrator`). A run that failed, or that cannot
# start (its entrypoint does not import), exits with a code the orchestrator Job's pod
# failure policy treats as final; any other failure (a crash, OOM, a lost node) restarts the
# pod, which replays the run.
ORCHESTRATOR_RUN_FAILED = 3
ORCHESTRATOR_CANNOT_START = 4

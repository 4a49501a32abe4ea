"""The step-runner: the only code that executes a step body.

Local threads, local subprocesses, operator threads, orchestrator pods and Job pods all call
`execute_step`. It loads the inputs through their materializers, runs the function with its
step context and log capture, saves each output as a new artifact version (files first, then
the metadata row that makes them visible), records metadata and the outcome, and runs the
step's hooks.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from kstep._compile import ArtifactRef, Binding, InputList, Param
from kstep._context import StepContext, step_scope
from kstep._errors import ArtifactLoadError, MaterializerError, OutputError, describe
from kstep._settings import Settings
from kstep._steps import Step
from kstep.materializers import (
    Materializer,
    PickleMaterializer,
    materializer_for,
    materializer_version,
    resolve_materializer,
    type_path,
)
from kstep.materializers._base import import_type
from kstep.runner import _logs
from kstep.runner._request import StepOutcome, StepRequest
from kstep.stores import Stores
from kstep.stores.artifacts import describe_uri
from kstep.stores.metadata import ArtifactVersionRecord, NewArtifactVersion
from kstep.stores.metadata.store import new_id

logger = logging.getLogger(__name__)


def execute_step(request: StepRequest, stores: Stores, settings: Settings) -> StepOutcome:
    """Run one attempt of a step and record its outcome in the stores."""
    step = request.step
    context = StepContext(
        pipeline_name=request.run.pipeline_name,
        run_id=request.run.id,
        run_name=request.run.name,
        step_run_id=request.step_run_id,
        invocation_id=request.invocation_id,
        step_name=step.name,
        attempt=request.attempt,
    )
    # On a cluster the runner names its own log (its store may differ from the operator's).
    logs_uri = request.logs_uri or stores.artifacts.log_uri(request.run.id, request.step_run_id)
    writer = stores.artifacts.open_log(logs_uri)
    outputs: list[NewArtifactVersion] = []
    error: BaseException | None = None

    with _logs.capture(writer, echo=settings.echo_step_logs):
        token = step_scope.set(context)
        try:
            arguments = load_inputs(request, stores)
            result = step.fn(**arguments)
            outputs = save_outputs(request, result, stores, settings)
        except BaseException as caught:
            error = caught
            traceback.print_exception(caught)
        finally:
            step_scope.reset(token)

        if error is None:
            records = stores.metadata.finish_step_run(
                request.step_run_id,
                status="completed",
                outputs=outputs,
                metadata=context.metadata,
                logs_uri=logs_uri,
            )
            _run_hook(step, "on_success", ())
            writer.close()
            return StepOutcome("completed", dict(_by_output(outputs, records)))

        status = "failed" if request.final_attempt else "retrying"
        stores.metadata.finish_step_run(
            request.step_run_id,
            status=status,
            metadata=context.metadata,
            error_type=type_path(type(error)),
            error_message=str(error)[:10_000],
            error_traceback="".join(traceback.format_exception(error))[-20_000:],
            logs_uri=logs_uri,
        )
        if request.final_attempt:
            _run_hook(step, "on_failure", (error,))
    writer.close()
    if isinstance(error, KeyboardInterrupt):
        raise error
    return StepOutcome(status, error=error)


def _by_output(
    outputs: list[NewArtifactVersion], records: list[ArtifactVersionRecord]
) -> list[tuple[str, ArtifactVersionRecord]]:
    return [(new.output_name, record) for new, record in zip(outputs, records, strict=True)]


def _run_hook(step: Step[..., Any], name: str, arguments: tuple[Any, ...]) -> None:
    hook = getattr(step.config, name)
    if hook is None:
        return
    try:
        import inspect

        accepted = len(inspect.signature(hook).parameters)
        hook(*arguments[:accepted])
    except Exception:
        # A hook is a notification; its failure is logged with the step, not its outcome.
        logger.exception("The %s hook of step %r failed.", name, step.name)


# ------------------------------------------------------------------ inputs


def load_inputs(request: StepRequest, stores: Stores) -> dict[str, Any]:
    """Load every input of the request: artifacts through their materializers, literals as is."""
    wanted = [ref.artifact_version_id for ref in _refs(request.inputs.values())]
    versions = dict(request.known_versions)
    missing = [v for v in wanted if v not in versions]
    if missing:
        versions.update(stores.metadata.versions_by_id(missing))
    return {
        name: _load_binding(request, name, binding, versions, stores)
        for name, binding in request.inputs.items()
    }


def _refs(bindings: Any) -> list[ArtifactRef]:
    found: list[ArtifactRef] = []
    for binding in bindings:
        if isinstance(binding, ArtifactRef):
            found.append(binding)
        elif isinstance(binding, InputList):
            found.extend(_refs(binding.items))
    return found


def _load_binding(
    request: StepRequest,
    name: str,
    binding: Binding,
    versions: dict[str, ArtifactVersionRecord],
    stores: Stores,
) -> Any:
    if isinstance(binding, Param):
        return binding.value
    if isinstance(binding, InputList):
        return [_load_binding(request, name, item, versions, stores) for item in binding.items]
    if isinstance(binding, ArtifactRef):
        record = versions.get(binding.artifact_version_id)
        if record is None:
            raise ArtifactLoadError(
                f"input {name!r} of step {request.invocation_id!r} refers to artifact version "
                f"{binding.artifact_version_id!r}, which is not in the metadata store"
            )
        return load_artifact(
            record, stores, binding.item, f"input {name!r} of step {request.invocation_id!r}"
        )
    raise ArtifactLoadError(f"input {name!r} of step {request.invocation_id!r} is unresolved")


def load_artifact(
    record: ArtifactVersionRecord, stores: Stores, item: int | None = None, what: str = ""
) -> Any:
    """Load an artifact version (or one item of it) with the materializer that saved it."""
    label = f"artifact {record.name!r} version {record.version}"
    prefix = f"{what}: " if what else ""
    try:
        materializer_class = resolve_materializer(record.materializer)
        data_type = import_type(record.data_type, "data type")
        materializer = materializer_class(stores.artifacts.location(record.uri))
        if item is not None:
            return materializer.load_item(item)
        return materializer.load(data_type)
    except ArtifactLoadError as error:
        raise ArtifactLoadError(f"{prefix}{label} cannot be loaded: {error}") from error
    except Exception as error:
        raise ArtifactLoadError(
            f"{prefix}{label} at {describe_uri(record.uri)} cannot be loaded with "
            f"{record.materializer}: "
            f"{type(error).__name__}: {error}"
        ) from error


# ------------------------------------------------------------------ outputs


def split_outputs(step: Step[..., Any], result: Any) -> dict[str, Any]:
    """Match a step's return value to its declared outputs."""
    names = step.output_names
    if not names:
        if result is not None:
            raise OutputError(
                f"step {step.name!r} declares no outputs (-> None) but returned "
                f"{describe(result)}; return nothing or declare an output"
            )
        return {}
    if len(names) == 1:
        return {names[0]: result}
    if not isinstance(result, tuple | list) or len(result) != len(names):
        got = f"{len(result)} values" if isinstance(result, tuple | list) else describe(result)
        raise OutputError(
            f"step {step.name!r} declares {len(names)} outputs {list(names)} but returned "
            f"{got}; return a tuple with one value per output"
        )
    return dict(zip(names, result, strict=True))


def artifact_name(pipeline_name: str, step: Step[..., Any], output: str) -> str:
    """The artifact an output is stored under: its explicit name, else pipeline::step::output."""
    for spec in step.outputs:
        if spec.name == output and spec.named:
            return output
    return f"{pipeline_name}::{step.name}::{output}"


def choose_materializer(
    step: Step[..., Any], output: str, value: Any, settings: Settings
) -> type[Materializer]:
    """The materializer that stores an output value, or a clear error if none can."""
    declared = step.config.output_materializers.get(output)
    if declared is not None:
        return declared
    found = materializer_for(value)
    if found is not None:
        return found
    if settings.allow_pickle:
        return PickleMaterializer
    raise MaterializerError(
        f"output {output!r} of step {step.name!r} is a {type_path(type(value))}, which no "
        "materializer can store; register a Materializer subclass with types=("
        f"{type(value).__name__},), pass output_materializers={{{output!r}: ...}} to @step, "
        "or set KSTEP_ALLOW_PICKLE=true for values you trust"
    )


def save_outputs(
    request: StepRequest, result: Any, stores: Stores, settings: Settings
) -> list[NewArtifactVersion]:
    """Save each output value as a new artifact version's files (not yet visible)."""
    values = split_outputs(request.step, result)
    saved: list[NewArtifactVersion] = []
    for output, value in values.items():
        materializer_class = choose_materializer(request.step, output, value, settings)
        name = artifact_name(request.run.pipeline_name, request.step, output)
        version_id = new_id()
        staged = stores.artifacts.stage(name, version_id)
        try:
            materializer = materializer_class(staged)
            materializer.save(value)
            metadata = materializer.extract_metadata(value)
            content_hash = materializer.content_hash(value)
            uri = staged.commit()
        except BaseException:
            staged.discard()
            raise
        saved.append(
            NewArtifactVersion(
                id=version_id,
                output_name=output,
                artifact_name=name,
                uri=uri,
                materializer=materializer_class.key(),
                materializer_version=materializer_version(materializer_class),
                data_type=type_path(type(value)),
                content_hash=content_hash,
                metadata=metadata,
            )
        )
    return saved

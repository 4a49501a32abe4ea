"""Rendering a pipeline into a `PipelineRun` manifest, the form a cluster runs it in.

A static pipeline is compiled here, on the submitting machine: its function runs once and
every step call becomes an invocation in `spec.steps`, wired to upstream outputs or to literal
parameters. What the invocations of one step configuration share (function reference, code
version, options) is stored once in `spec.definitions`. A dynamic pipeline is rendered as
its entrypoint and parameters: its function runs on the cluster.

References to user code are written as the pods will import them: relative to the code root
(`dir/train.py:fit` packed with root `dir` becomes `train:fit`), never as paths of this
machine. Everything is checked against the spec models before it leaves this process, so a
pipeline the operator cannot run is rejected here, with the pipeline and step named.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from kstep._compile import ArtifactRef, Binding, Invocation, OutputRef, Param
from kstep._errors import CodeArchiveError, KstepError, PipelineDefinitionError
from kstep._params import canonical_json
from kstep.cluster import names
from kstep.cluster.code import default_code_root, is_installed, is_script_module, is_within
from kstep.cluster.specs import API_VERSION, CodeSpec, PipelineRunSpec

if TYPE_CHECKING:
    from kstep._pipelines import Pipeline
    from kstep._steps import Step

logger = logging.getLogger(__name__)

KIND = "PipelineRun"
PLURAL = "pipelineruns"

# A custom resource's name is a DNS subdomain (RFC 1123).
_RESOURCE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def render_pipeline_run(
    pipeline: Pipeline,
    parameters: Mapping[str, Any] | None = None,
    *,
    name: str | None = None,
    namespace: str | None = None,
    code: CodeSpec | None = None,
    code_root: str | os.PathLike[str] | None = None,
    parallelism: int | None = None,
    timeout_seconds: int | None = None,
    ttl_seconds_after_finished: int | None = None,
    service_account_name: str | None = None,
    store_secret: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Render a pipeline and its parameters as a complete `PipelineRun` manifest.

    Args:
        pipeline: a `@pipeline`, static or dynamic.
        parameters: the pipeline's parameters by name; defaults fill in the rest.
        name: the PipelineRun's name (a DNS subdomain); default: `<pipeline>-<time>-<random>`.
        namespace: set as `metadata.namespace`; None leaves it to `kubectl apply -n` or
            `submit`.
        code: where the pods get the code from (`pack_code` returns it); None for the
            operator's default image.
        code_root: the directory the code's references are relative to (the one packed, or
            the one on `sys.path` in the image); default: see `default_code_root`.
        parallelism: invocations of the run that may run at once (default 32).
        timeout_seconds: the whole run's deadline.
        ttl_seconds_after_finished: delete the PipelineRun (and its children) this long after
            it finished.
        service_account_name: the service account of the run's pods.
        store_secret: the Secret holding the pods' store settings and credentials; default:
            the operator's.
        labels: extra labels of the PipelineRun.

    Returns:
        The manifest as plain data, ready for `to_yaml`, `kubectl apply` or the API.

    Raises:
        ParameterError: a parameter is unknown, missing or not JSON.
        PipelineDefinitionError: the pipeline cannot run on a cluster (a step defined inside
            a function, code outside the code root, an invalid name or option).

    Example:
        >>> from examples.quickstart import training  # doctest: +SKIP
        >>> manifest = render_pipeline_run(training, {"rows": 200}, name="training-1")
        >>> print(to_yaml(manifest))  # doctest: +SKIP
    """
    bound = pipeline.bind_parameters((), dict(parameters or {}))
    run_name = _check_name(pipeline, name)
    packing = code is not None and code.archive is not None
    root = _code_root(pipeline, code_root, packing)
    references = _References(pipeline, root, packing)

    spec: dict[str, Any] = {
        "pipelineName": pipeline.name,
        "mode": "dynamic" if pipeline.dynamic else "static",
    }
    if code is not None:
        spec["code"] = code.model_dump(by_alias=True, exclude_none=True)
    spec["parameters"] = bound
    if pipeline.dynamic:
        spec["entrypoint"] = references.of_pipeline()
    else:
        definitions = _Definitions(references)
        compiled = pipeline.compile(bound)
        steps = [_invocation(pipeline, item, definitions) for item in compiled.invocations.values()]
        spec["definitions"] = definitions.specs
        spec["steps"] = steps
    spec["executionMode"] = pipeline.execution_mode
    spec["enableCache"] = pipeline.enable_cache
    # Written out even when defaulted, so the manifest equals the object the server stores.
    spec["parallelism"] = (
        parallelism
        if parallelism is not None
        else PipelineRunSpec.model_fields["parallelism"].default
    )
    optional = {
        "timeoutSeconds": timeout_seconds,
        "ttlSecondsAfterFinished": ttl_seconds_after_finished,
        "serviceAccountName": service_account_name,
        "storeSecret": store_secret,
    }
    spec.update({key: value for key, value in optional.items() if value is not None})

    metadata: dict[str, Any] = {"name": run_name}
    if namespace is not None:
        metadata["namespace"] = namespace
    metadata["labels"] = {
        names.LABEL_PIPELINE: names.label_value(pipeline.name),
        **dict(labels or {}),
    }
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "spec": _validated(pipeline, spec),
    }


class _ManifestDumper(yaml.SafeDumper):
    """Quotes strings that YAML 1.1 readers (kubectl among them) take for booleans.

    PyYAML writes `n`, `y`, `on`... unquoted, but Kubernetes' YAML parser reads them as
    false or true: a step input named `n` would reach the cluster as the key `false`.
    """


_YAML11_BOOLEANS = frozenset(
    f(word)
    for word in ("y", "n", "yes", "no", "on", "off", "true", "false")
    for f in (str.lower, str.upper, str.capitalize)
)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    if value in _YAML11_BOOLEANS:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="'")
    return dumper.represent_str(value)


_ManifestDumper.add_representer(str, _represent_str)


def to_yaml(manifest: Mapping[str, Any]) -> str:
    """A manifest as YAML, keys in the order they were rendered (apiVersion first)."""
    return yaml.dump(
        dict(manifest), Dumper=_ManifestDumper, sort_keys=False, allow_unicode=True, width=100
    )


# ------------------------------------------------------------------ checks


def _check_name(pipeline: Pipeline, name: str | None) -> str:
    if name is None:
        from kstep.engine._local import run_name

        return run_name(pipeline.name)
    if not isinstance(name, str) or len(name) > 253 or not _RESOURCE_NAME.match(name):
        raise PipelineDefinitionError(
            f"run name {name!r} of pipeline {pipeline.name!r} is invalid; a PipelineRun's name "
            "uses lowercase letters, digits, '-' and '.', starts and ends with a letter or "
            "digit, and has at most 253 characters"
        )
    return name


def _code_root(
    pipeline: Pipeline, code_root: str | os.PathLike[str] | None, packing: bool
) -> str | None:
    if code_root is not None:
        root = os.path.realpath(os.fspath(code_root))
        if not os.path.isdir(root):
            raise PipelineDefinitionError(
                f"pipeline {pipeline.name!r}: code root {os.fspath(code_root)!r} is not a directory"
            )
        return root
    try:
        return default_code_root(pipeline.fn.__module__)
    except CodeArchiveError as error:
        # Installed code is fine when the image carries it; it only cannot be packed.
        if packing:
            raise PipelineDefinitionError(f"pipeline {pipeline.name!r}: {error}") from None
        return None


def _validated(pipeline: Pipeline, spec: dict[str, Any]) -> dict[str, Any]:
    try:
        model = PipelineRunSpec.model_validate(spec)
    except ValidationError as error:
        problems = "; ".join(
            f"spec.{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
            + (f" (got {_short(problem['input'])})" if "input" in problem else "")
            for problem in error.errors()[:5]
        )
        raise PipelineDefinitionError(
            f"pipeline {pipeline.name!r} renders an invalid PipelineRun: {problems}"
        ) from None
    # Only what was set: a literal `param: None` stays, absent optional fields stay absent.
    dumped: dict[str, Any] = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
    return dumped


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ------------------------------------------------------------------ references


class _References:
    """Turns this process's references to user code into the ones pods import."""

    def __init__(self, pipeline: Pipeline, root: str | None, packing: bool) -> None:
        self.pipeline = pipeline
        self.root = root
        self.packing = packing

    def of_pipeline(self) -> str:
        from kstep._pipelines import Pipeline

        reference = self._reference_of(self.pipeline.fn, f"pipeline {self.pipeline.name!r}")
        self._check_importable(self.pipeline.fn, Pipeline, f"pipeline {self.pipeline.name!r}")
        return self.relocate(reference, f"pipeline {self.pipeline.name!r}")

    def of_step(self, step: Step[..., Any]) -> str:
        from kstep._steps import Step

        what = f"step {step.name!r}"
        reference = self._reference_of(step.fn, what)
        self._check_importable(step.fn, Step, what)
        return self.relocate(reference, what)

    def _reference_of(self, fn: Any, what: str) -> str:
        from kstep._steps import function_reference

        try:
            return function_reference(fn, what)
        except KstepError as error:
            raise PipelineDefinitionError(
                f"pipeline {self.pipeline.name!r} cannot run on a cluster: {error}"
            ) from None

    def _check_importable(self, fn: Any, kind: type, what: str) -> None:
        # A pod imports `module:qualname` and expects the decorated object there, not the
        # plain function (which is what it finds if the decorator was applied elsewhere).
        target: Any = sys.modules.get(fn.__module__)
        for attribute in fn.__qualname__.split("."):
            target = getattr(target, attribute, None)
        if not isinstance(target, kind) or getattr(target, "fn", None) is not fn:
            raise PipelineDefinitionError(
                f"pipeline {self.pipeline.name!r} cannot run on a cluster: {what} is not "
                f"importable as {fn.__module__}:{fn.__qualname__} (that name is "
                f"{_short(target)}); decorate the function where it is defined, at module "
                "level"
            )

    def relocate(self, reference: str, what: str) -> str:
        """`reference` as pods import it: scripts become modules relative to the code root."""
        module_part, _, qualname = reference.rpartition(":")
        if module_part.endswith(".py"):
            path = os.path.realpath(module_part)
        elif is_script_module(module_part):
            file = getattr(sys.modules.get(module_part), "__file__", None)
            if file is None:
                raise PipelineDefinitionError(
                    f"pipeline {self.pipeline.name!r} cannot run on a cluster: {what} is "
                    "defined in an interactive session; define it in a module or script file"
                )
            path = os.path.realpath(file)
        else:
            if self.packing:
                self._check_packed(module_part, what)
            return reference

        if self.root is None or not is_within(path, self.root):
            raise PipelineDefinitionError(
                f"pipeline {self.pipeline.name!r} cannot run on a cluster: {what} is defined "
                f"in {path}, outside the code root {self.root}; pass code_root= a directory "
                "that contains it"
            )
        parts = os.path.splitext(os.path.relpath(path, self.root))[0].split(os.sep)
        if not all(part.isidentifier() for part in parts):
            raise PipelineDefinitionError(
                f"pipeline {self.pipeline.name!r} cannot run on a cluster: {what} is defined "
                f"in {path}, which cannot be imported as a module from the code root "
                f"{self.root} ({'.'.join(parts)!r} is not a module name); rename the file or "
                "its directories to Python identifiers"
            )
        return f"{'.'.join(parts)}:{qualname}"

    def _check_packed(self, module_name: str, what: str) -> None:
        assert self.root is not None
        file = getattr(sys.modules.get(module_name), "__file__", None)
        if file is None:
            return
        path = os.path.realpath(file)
        if is_within(path, self.root) or is_installed(path):
            return
        raise PipelineDefinitionError(
            f"pipeline {self.pipeline.name!r} cannot run on a cluster: {what} is defined in "
            f"module {module_name!r} ({path}), which is neither in the packed code root "
            f"{self.root} nor installed; pass code_root= a directory that contains both, or "
            "install the module in the image"
        )


# ------------------------------------------------------------------ definitions


def step_definition(pipeline: Pipeline, step: Step[..., Any]) -> dict[str, Any]:
    """A step's StepRun definition, with references as this process imports them.

    A dynamic run's orchestrator uses it: its code is already unpacked and importable, so
    references need no relocation.
    """
    return _Definitions(_References(pipeline, None, False))._definition(step)


class _Definitions:
    """The distinct step configurations of a run, keyed as `spec.definitions` keys them.

    A step's first configuration (in call order) is keyed by the step's name; a different
    configuration under the same name (`with_options`) by `name-<8 hex of its identity>`.
    """

    def __init__(self, references: _References) -> None:
        self.references = references
        self.specs: dict[str, dict[str, Any]] = {}
        self._keys: dict[str, str] = {}

    def key_of(self, step: Step[..., Any]) -> str:
        definition = self._definition(step)
        identity = canonical_json({"function": definition["function"], **definition["options"]})
        key = self._keys.get(identity)
        if key is not None:
            return key
        key = step.name
        if key in self.specs:
            key = f"{step.name}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"
        self._keys[identity] = key
        self.specs[key] = definition
        return key

    def _definition(self, step: Step[..., Any]) -> dict[str, Any]:
        from kstep._caching import step_fingerprint
        from kstep.runner._isolated import step_options

        config = step.config
        what = f"step {step.name!r}"
        try:
            options = step_options(step)
        except KstepError as error:
            raise PipelineDefinitionError(
                f"pipeline {self.references.pipeline.name!r} cannot run on a cluster: {error}"
            ) from None
        for hook in ("on_failure", "on_success"):
            if options[hook] is not None:
                options[hook] = self.references.relocate(options[hook], f"{hook} hook of {what}")
        options["output_materializers"] = {
            output: self.references.relocate(reference, f"materializer of {what}")
            for output, reference in options["output_materializers"].items()
        }

        definition: dict[str, Any] = {
            "step": step.name,
            "function": self.references.of_step(step),
            "sourceHash": step.source_hash,
            "outputs": step_fingerprint(step)["outputs"],
            "runtime": config.runtime or "inline",
        }
        if config.enable_cache is not None:
            definition["enableCache"] = config.enable_cache
        if config.cache_expires_after is not None:
            definition["cacheExpiresAfterSeconds"] = config.cache_expires_after
        if config.retry.max_retries > 0:
            definition["retry"] = {
                "maxRetries": config.retry.max_retries,
                "delaySeconds": config.retry.delay,
                "backoff": config.retry.backoff,
            }
        if config.timeout is not None:
            # The Job deadline is whole seconds; rounding up never cuts a step short.
            definition["timeoutSeconds"] = math.ceil(config.timeout)
        if config.pod:
            definition["pod"] = dict(config.pod)
        # Only the options that are set: client-side `kubectl apply` drops null values, and
        # the runner reads an absent option as None.
        definition["options"] = {key: value for key, value in options.items() if value is not None}
        return definition


def _invocation(
    pipeline: Pipeline, invocation: Invocation, definitions: _Definitions
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "id": invocation.id,
        "definition": definitions.key_of(invocation.step),
    }
    if invocation.inputs:
        spec["inputs"] = {
            name: _input(pipeline, invocation, name, binding, top=True)
            for name, binding in invocation.inputs.items()
        }
    if invocation.after:
        spec["after"] = list(invocation.after)
    return spec


def _input(
    pipeline: Pipeline, invocation: Invocation, name: str, binding: Binding, *, top: bool
) -> dict[str, Any]:
    if isinstance(binding, Param):
        return {"param": binding.value}
    if isinstance(binding, OutputRef):
        found: dict[str, Any] = {
            "output": {"step": binding.invocation_id, "output": binding.output}
        }
        if binding.item is not None:
            found["item"] = binding.item
        return found
    if isinstance(binding, ArtifactRef):
        found = {"artifact": binding.artifact_version_id}
        if binding.item is not None:
            found["item"] = binding.item
        return found
    if not top:
        raise PipelineDefinitionError(
            f"pipeline {pipeline.name!r}: input {name!r} of step {invocation.id!r} nests a list "
            "of step outputs inside a list; a cluster run takes one level: pass a flat list"
        )
    return {"list": [_input(pipeline, invocation, name, item, top=False) for item in binding.items]}

"""Pipeline definitions: the `@pipeline` decorator and the `Pipeline` it returns."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, overload

from kstep._compile import CompiledPipeline, CompileScope
from kstep._context import pipeline_scope
from kstep._errors import ParameterError, PipelineDefinitionError, describe
from kstep._outputs import NAME_PATTERN, NAME_RULE
from kstep._params import check_json_value

if TYPE_CHECKING:
    from kstep.client import Run

ExecutionMode = Literal["continue_on_failure", "stop_on_failure", "fail_fast"]
EXECUTION_MODES: tuple[str, ...] = ("continue_on_failure", "stop_on_failure", "fail_fast")
_OPTION_NAMES = ("name", "enable_cache", "execution_mode", "on_failure", "on_success", "dynamic")


class Pipeline:
    """A pipeline definition: a Python function that calls steps.

    Calling a pipeline runs it on the local engine and returns the finished `Run`; a run that
    ends failed raises `RunFailed`, whose `.run` is that run.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        enable_cache: bool = True,
        execution_mode: ExecutionMode | None = None,
        on_failure: Callable[..., Any] | None = None,
        on_success: Callable[..., Any] | None = None,
        dynamic: bool = False,
    ) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        self.enable_cache = enable_cache
        self.dynamic = dynamic
        self.on_failure = on_failure
        self.on_success = on_success
        self.signature = inspect.signature(fn)
        self._check_options(execution_mode)
        self.execution_mode: ExecutionMode = execution_mode or (
            "stop_on_failure" if dynamic else "continue_on_failure"
        )
        functools.update_wrapper(self, fn)

    def _check_options(self, execution_mode: str | None) -> None:
        if not NAME_PATTERN.match(self.name):
            raise PipelineDefinitionError(
                f"pipeline name {self.name!r} is invalid; pipeline names may use {NAME_RULE}"
            )
        if execution_mode is not None and execution_mode not in EXECUTION_MODES:
            raise PipelineDefinitionError(
                f"pipeline {self.name!r}: execution_mode={execution_mode!r} is invalid; "
                f"accepted: {', '.join(repr(m) for m in EXECUTION_MODES)}"
            )
        if not isinstance(self.enable_cache, bool):
            raise PipelineDefinitionError(
                f"pipeline {self.name!r}: enable_cache={self.enable_cache!r} is invalid; "
                "expected True or False"
            )
        for hook_name, hook in (("on_failure", self.on_failure), ("on_success", self.on_success)):
            if hook is not None and not callable(hook):
                raise PipelineDefinitionError(
                    f"pipeline {self.name!r}: {hook_name}={describe(hook)} is not callable"
                )
        for parameter in self.signature.parameters.values():
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                raise PipelineDefinitionError(
                    f"pipeline {self.name!r} takes *{parameter.name}; pipeline parameters "
                    "must be named"
                )

    def __repr__(self) -> str:
        kind = "dynamic pipeline" if self.dynamic else "pipeline"
        return f"<{kind} {self.name!r}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Run:
        """Run the pipeline on the local engine and return the finished run."""
        from kstep.engine import LocalEngine

        parameters = self.bind_parameters(args, kwargs)
        return LocalEngine.default().run(self, parameters)

    def bind_parameters(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Match call arguments to the pipeline's parameters and check each is JSON."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as error:
            accepted = ", ".join(self.signature.parameters) or "no parameters"
            raise ParameterError(
                f"pipeline {self.name!r} cannot be called this way: {error}; it accepts {accepted}"
            ) from None
        bound.apply_defaults()
        for name, value in bound.arguments.items():
            check_json_value(value, f"parameter {name!r} of pipeline {self.name!r}")
        return dict(bound.arguments)

    def compile(self, parameters: dict[str, Any] | None = None) -> CompiledPipeline:
        """Run a static pipeline's function once and return its graph of invocations."""
        if self.dynamic:
            raise PipelineDefinitionError(
                f"pipeline {self.name!r} is dynamic; its graph exists only while it runs"
            )
        compiled = CompiledPipeline(self, dict(parameters or {}))
        token = pipeline_scope.set(CompileScope(compiled))
        try:
            self.fn(**compiled.parameters)
        finally:
            pipeline_scope.reset(token)
        if not compiled.invocations:
            raise PipelineDefinitionError(
                f"pipeline {self.name!r} calls no steps; a pipeline needs at least one step"
            )
        return compiled

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        """Not available: only steps can be submitted."""
        raise PipelineDefinitionError(
            f"{self!r} is a pipeline; only steps can be called with .submit(), .map() or "
            ".product() inside a dynamic pipeline"
        )

    map = product = submit

    @functools.cached_property
    def reference(self) -> str:
        """`module:qualname` (or `path.py:qualname`) that imports this pipeline again."""
        from kstep._steps import function_reference

        return function_reference(self.fn, f"pipeline {self.name!r}")


@overload
def pipeline(fn: Callable[..., Any], /) -> Pipeline: ...


@overload
def pipeline(
    *,
    name: str | None = None,
    enable_cache: bool = True,
    execution_mode: ExecutionMode | None = None,
    on_failure: Callable[..., Any] | None = None,
    on_success: Callable[..., Any] | None = None,
    dynamic: bool = False,
) -> Callable[[Callable[..., Any]], Pipeline]: ...


def pipeline(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Turn a function that calls steps into a pipeline.

    Args:
        fn: the function, when used as `@pipeline` without parentheses.
        **options: `name`, `enable_cache` (default for its steps), `execution_mode`
            (`"continue_on_failure"`, the default for static pipelines, runs every branch
            that does not depend on a failed step; `"stop_on_failure"`, the default for
            dynamic ones, starts nothing new after a failure; `"fail_fast"` also stops the
            steps still running), `on_failure` and `on_success` hooks, and `dynamic`
            (run the function at run time so Python control flow can use step outputs).

    Example:
        >>> @pipeline(execution_mode="stop_on_failure")
        ... def training(rows: int = 100):
        ...     data = load(rows)
        ...     model = train(data)
        ...     evaluate(model, data)
    """
    unknown = sorted(set(options) - set(_OPTION_NAMES))
    if unknown:
        raise PipelineDefinitionError(
            f"@pipeline got unknown option(s) {unknown}; accepted: {', '.join(_OPTION_NAMES)}"
        )

    def decorate(function: Callable[..., Any]) -> Pipeline:
        if not inspect.isfunction(function):
            raise PipelineDefinitionError(
                f"@pipeline decorates plain functions; got {describe(function)}"
            )
        return Pipeline(function, **options)

    if fn is not None:
        return decorate(fn)
    return decorate

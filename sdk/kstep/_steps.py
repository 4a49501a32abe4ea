"""Step definitions: the `@step` decorator and the `Step` it returns."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeVar, overload

from kstep._context import pipeline_scope
from kstep._errors import StepDefinitionError, describe
from kstep._outputs import NAME_PATTERN, NAME_RULE, OutputSpec, read_outputs
from kstep._retry import Retry

if TYPE_CHECKING:
    from kstep.materializers import Materializer

P = ParamSpec("P")
R = TypeVar("R")

Runtime = Literal["inline", "isolated"]
RUNTIMES: tuple[str, ...] = ("inline", "isolated")
RESERVED_KEYWORDS = ("id", "after")
# Package under which script files (`path/to/file.py:name` references) are imported.
SCRIPT_PACKAGE = "__kstep_script__"
_OPTION_NAMES = (
    "name",
    "enable_cache",
    "retry",
    "runtime",
    "on_failure",
    "on_success",
    "output_materializers",
    "cache_expires_after",
    "timeout",
    "pod",
)


@dataclass(frozen=True)
class StepConfig:
    """Options of a step; `None` means "inherit from the pipeline or the default"."""

    name: str
    enable_cache: bool | None = None
    retry: Retry = field(default_factory=Retry)
    runtime: Runtime | None = None
    on_failure: Callable[..., Any] | None = None
    on_success: Callable[..., Any] | None = None
    output_materializers: Mapping[str, type[Materializer]] = field(default_factory=dict)
    cache_expires_after: float | None = None
    timeout: float | None = None
    pod: Mapping[str, Any] | None = None


class Step(Generic[P, R]):
    """A step definition: a typed Python function plus its options.

    Called inside a pipeline's function, a step records (static pipelines) or starts
    (dynamic pipelines) an invocation. Called anywhere else, it simply runs the function,
    which keeps steps easy to unit-test.
    """

    def __init__(self, fn: Callable[P, R], config: StepConfig) -> None:
        self.fn = fn
        self.config = config
        self.signature = inspect.signature(fn)
        self.outputs: tuple[OutputSpec, ...] = read_outputs(fn, config.name)
        _check_signature(self.signature, config.name)
        _check_materializers(config, self.outputs)
        _check_importable(fn, config)
        functools.update_wrapper(self, fn)

    @property
    def name(self) -> str:
        """The step's name (the function's name unless `name=` was given)."""
        return self.config.name

    @property
    def output_names(self) -> tuple[str, ...]:
        """Names of the declared outputs, in order."""
        return tuple(spec.name for spec in self.outputs)

    def __repr__(self) -> str:
        return f"<step {self.name!r}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        invocation_id, after = _pop_reserved(kwargs)
        scope = pipeline_scope.get()
        if scope is None:
            return self.fn(*args, **kwargs)
        return scope.call_step(
            self, args, kwargs, invocation_id=invocation_id, after=after, concurrent=False
        )

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        """Start this step concurrently inside a dynamic pipeline and return a `StepFuture`."""
        invocation_id, after = _pop_reserved(kwargs)
        scope = self._scope("submit")
        return scope.call_step(
            self, args, kwargs, invocation_id=invocation_id, after=after, concurrent=True
        )

    def map(self, **kwargs: Any) -> Any:
        """Run this step once per item of the mapped inputs, zipped, in a dynamic pipeline.

        Wrap an argument in `unmapped(...)` to pass it whole to every invocation.
        """
        after = kwargs.pop("after", None)
        return self._scope("map").map_step(self, kwargs, product=False, after=after)

    def product(self, **kwargs: Any) -> Any:
        """Run this step once per combination of the mapped inputs, in row-major order."""
        after = kwargs.pop("after", None)
        return self._scope("product").map_step(self, kwargs, product=True, after=after)

    def with_options(self, **options: Any) -> Step[P, R]:
        """Return a copy of this step with some `@step` options replaced."""
        unknown = sorted(set(options) - set(_OPTION_NAMES))
        if unknown:
            raise StepDefinitionError(
                f"step {self.name!r}: with_options() got unknown option(s) {unknown}; "
                f"accepted: {', '.join(_OPTION_NAMES)}"
            )
        config = _make_config(self.fn, **{**_config_options(self.config), **options})
        return Step(self.fn, config)

    @functools.cached_property
    def source_hash(self) -> str:
        """A hash of the step function's source code (its code version)."""
        return hashlib.sha256(_source_of(self.fn).encode()).hexdigest()

    @functools.cached_property
    def reference(self) -> str:
        """`module:qualname` (or `path/to/file.py:qualname`) that imports this step again."""
        return function_reference(self.fn, f"step {self.name!r}")

    def _scope(self, verb: str) -> Any:
        scope = pipeline_scope.get()
        if scope is None or not hasattr(scope, "dynamic"):
            raise StepDefinitionError(
                f"step {self.name!r}: .{verb}() is only available inside a dynamic pipeline "
                "(@pipeline(dynamic=True)); call the step directly in a static pipeline"
            )
        return scope


def function_reference(fn: Callable[..., Any], what: str) -> str:
    """Return a reference from which another process can import `fn` again."""
    qualname = fn.__qualname__
    if "<lambda>" in qualname:
        raise StepDefinitionError(
            f"{what} is a lambda; a step that runs in another process needs a function "
            "defined with def at module level"
        )
    if "<locals>" in qualname:
        raise StepDefinitionError(
            f"{what} is defined inside a function ({qualname!r}); a step that runs in "
            "another process must be defined at module level"
        )
    module = fn.__module__
    # Neither a script run as `__main__` nor a script file imported by path can be imported
    # by module name in another process; its file path can.
    if module == "__main__" or module.startswith(f"{SCRIPT_PACKAGE}."):
        path = getattr(sys.modules.get(module), "__file__", None)
        if path is None:
            raise StepDefinitionError(
                f"{what} is defined in an interactive session; a step that runs in another "
                "process must be defined in a module or a script file"
            )
        return f"{path}:{qualname}"
    return f"{module}:{qualname}"


def _source_of(fn: Callable[..., Any]) -> str:
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        # No source file (an interactive session): the bytecode is the next best version.
        code = fn.__code__
        return f"{code.co_code.hex()}:{code.co_consts!r}:{code.co_names!r}"


def _pop_reserved(kwargs: dict[str, Any]) -> tuple[str | None, Any]:
    invocation_id = kwargs.pop("id", None)
    after = kwargs.pop("after", None)
    return invocation_id, after


def _check_signature(signature: inspect.Signature, step_name: str) -> None:
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise StepDefinitionError(
                f"step {step_name!r} takes *{parameter.name}; steps need named parameters "
                "so that each input can be stored and cached on its own"
            )
        if parameter.name in RESERVED_KEYWORDS:
            raise StepDefinitionError(
                f"step {step_name!r} has a parameter named {parameter.name!r}, which is "
                f"reserved for step calls ({', '.join(RESERVED_KEYWORDS)}); rename it"
            )


def _check_importable(fn: Callable[..., Any], config: StepConfig) -> None:
    # An isolated step runs in a process that imports it and its hooks again: refuse now
    # what that process could not import, rather than once the run reaches the step.
    if config.runtime != "isolated":
        return
    function_reference(fn, f"step {config.name!r}")
    for hook_name in ("on_failure", "on_success"):
        hook = getattr(config, hook_name)
        if hook is not None:
            function_reference(hook, f"the {hook_name} hook of step {config.name!r}")


def _check_materializers(config: StepConfig, outputs: tuple[OutputSpec, ...]) -> None:
    if not config.output_materializers:
        return
    from kstep.materializers import Materializer

    names = {spec.name for spec in outputs}
    for name, materializer in config.output_materializers.items():
        if name not in names:
            raise StepDefinitionError(
                f"step {config.name!r}: output_materializers names the output {name!r}, "
                f"but the step declares {sorted(names) or 'no outputs'}"
            )
        if not (isinstance(materializer, type) and issubclass(materializer, Materializer)):
            raise StepDefinitionError(
                f"step {config.name!r}: output_materializers[{name!r}] is "
                f"{describe(materializer)}; expected a Materializer subclass"
            )


def _config_options(config: StepConfig) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def _make_config(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    enable_cache: bool | None = None,
    retry: Retry | None = None,
    runtime: str | None = None,
    on_failure: Callable[..., Any] | None = None,
    on_success: Callable[..., Any] | None = None,
    output_materializers: Any = None,
    cache_expires_after: float | datetime.timedelta | None = None,
    timeout: float | datetime.timedelta | None = None,
    pod: Mapping[str, Any] | None = None,
) -> StepConfig:
    step_name = str(name or getattr(fn, "__name__", ""))
    if not NAME_PATTERN.match(step_name):
        raise StepDefinitionError(
            f"step name {step_name!r} is invalid; step names may use {NAME_RULE}"
        )
    if runtime is not None and runtime not in RUNTIMES:
        raise StepDefinitionError(
            f"step {step_name!r}: runtime={runtime!r} is invalid; accepted: 'inline', 'isolated'"
        )
    if retry is not None and not isinstance(retry, Retry):
        raise StepDefinitionError(
            f"step {step_name!r}: retry={describe(retry)} is invalid; expected "
            "Retry(max_retries=..., delay=..., backoff=...)"
        )
    if enable_cache is not None and not isinstance(enable_cache, bool):
        raise StepDefinitionError(
            f"step {step_name!r}: enable_cache={enable_cache!r} is invalid; expected True or False"
        )
    for hook_name, hook in (("on_failure", on_failure), ("on_success", on_success)):
        if hook is not None and not callable(hook):
            raise StepDefinitionError(
                f"step {step_name!r}: {hook_name}={describe(hook)} is not callable"
            )
    return StepConfig(
        name=step_name,
        enable_cache=enable_cache,
        retry=retry or Retry(),
        runtime=runtime,  # type: ignore[arg-type]
        on_failure=on_failure,
        on_success=on_success,
        output_materializers=_materializer_map(step_name, fn, output_materializers),
        cache_expires_after=_seconds(step_name, "cache_expires_after", cache_expires_after),
        timeout=_seconds(step_name, "timeout", timeout),
        pod=_pod_options(step_name, pod),
    )


def _pod_options(step_name: str, pod: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if pod is None:
        return None
    if not isinstance(pod, Mapping):
        raise StepDefinitionError(
            f"step {step_name!r}: pod={describe(pod)} is invalid; expected a mapping with "
            "resources, nodeSelector, tolerations or serviceAccountName"
        )
    from pydantic import ValidationError

    from kstep.cluster.specs import PodSpecOverrides

    try:
        checked = PodSpecOverrides.model_validate(dict(pod))
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        raise StepDefinitionError(
            f"step {step_name!r}: pod options are invalid: {problems}"
        ) from None
    return checked.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True)


def _materializer_map(step_name: str, fn: Callable[..., Any], value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    # A single materializer class applies to every output.
    return {spec.name: value for spec in read_outputs(fn, step_name)}


def _seconds(step_name: str, option: str, value: float | datetime.timedelta | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise StepDefinitionError(
            f"step {step_name!r}: {option}={value!r} is invalid; expected seconds > 0 or a "
            "datetime.timedelta"
        )
    return float(value)


@overload
def step(fn: Callable[P, R], /) -> Step[P, R]: ...


@overload
def step(
    *,
    name: str | None = None,
    enable_cache: bool | None = None,
    retry: Retry | None = None,
    runtime: Runtime | None = None,
    on_failure: Callable[..., Any] | None = None,
    on_success: Callable[..., Any] | None = None,
    output_materializers: Any = None,
    cache_expires_after: float | datetime.timedelta | None = None,
    timeout: float | datetime.timedelta | None = None,
    pod: Mapping[str, Any] | None = None,
) -> Callable[[Callable[P, R]], Step[P, R]]: ...


def step(fn: Callable[P, R] | None = None, /, **options: Any) -> Any:
    """Turn a function into a step.

    Args:
        fn: the function, when used as `@step` without parentheses.
        **options: `name`, `enable_cache`, `retry` (a `Retry`), `runtime` (`"inline"`: a
            thread of the orchestration environment; `"isolated"`: its own process or pod),
            `on_failure` (called with the exception after the last attempt failed),
            `on_success`, `output_materializers` (a Materializer subclass, or a mapping from
            output name to one), `cache_expires_after` (seconds or a timedelta), `timeout`
            (seconds an isolated step may run on a cluster before its Job is stopped), and
            `pod` (for isolated steps on a cluster: `resources`, `nodeSelector`,
            `tolerations`, `serviceAccountName`, as in a Kubernetes pod spec).

    Example:
        >>> from typing import Annotated
        >>> @step(retry=Retry(max_retries=2, delay=1.0))
        ... def split(rows: list[int]) -> tuple[Annotated[list[int], "train"],
        ...                                    Annotated[list[int], "test"]]:
        ...     return rows[:8], rows[8:]
    """
    unknown = sorted(set(options) - set(_OPTION_NAMES))
    if unknown:
        raise StepDefinitionError(
            f"@step got unknown option(s) {unknown}; accepted: {', '.join(_OPTION_NAMES)}"
        )

    def decorate(function: Callable[P, R]) -> Step[P, R]:
        if isinstance(function, Step):
            raise StepDefinitionError(f"{function!r} is already a step; decorate it only once")
        if not inspect.isfunction(function):
            raise StepDefinitionError(f"@step decorates plain functions; got {describe(function)}")
        if inspect.iscoroutinefunction(function) or inspect.isgeneratorfunction(function):
            raise StepDefinitionError(
                f"@step got {function.__qualname__!r}, an async or generator function; "
                "steps are plain functions that return their outputs"
            )
        return Step(function, _make_config(function, **options))

    if fn is not None:
        return decorate(fn)
    return decorate

"""Step definitions: outputs, options, and the errors `@step` raises for bad definitions."""

from __future__ import annotations

import datetime
import re
from typing import Annotated, Any

import pytest

from kstep import Materializer, Retry, step
from kstep._errors import StepDefinitionError


def test_step_single_return_value_is_the_output_named_output() -> None:
    @step
    def load() -> list[int]:
        return [1]

    assert load.output_names == ("output",)


def test_step_unannotated_return_is_the_output_named_output() -> None:
    @step
    def load():  # type: ignore[no-untyped-def]
        return 1

    assert load.output_names == ("output",)


def test_step_annotated_return_names_its_output() -> None:
    @step
    def train() -> Annotated[dict[str, float], "model"]:
        return {}

    assert train.output_names == ("model",)


def test_step_tuple_of_annotated_members_declares_several_outputs() -> None:
    @step
    def split() -> tuple[Annotated[list[int], "train"], Annotated[list[int], "test"]]:
        return [], []

    assert split.output_names == ("train", "test")


def test_step_tuple_of_plain_members_numbers_its_outputs() -> None:
    @step
    def pair() -> tuple[int, str]:
        return 1, "a"

    assert pair.output_names == ("output_0", "output_1")


def test_step_variable_length_tuple_is_one_output() -> None:
    @step
    def many() -> tuple[int, ...]:
        return (1, 2, 3)

    assert many.output_names == ("output",)


def test_step_returning_none_declares_no_outputs() -> None:
    @step
    def report() -> None:
        pass

    assert report.output_names == ()


def test_step_name_defaults_to_the_function_name() -> None:
    @step
    def clean_rows() -> int:
        return 1

    @step(name="cleaner")
    def other() -> int:
        return 1

    assert (clean_rows.name, other.name) == ("clean_rows", "cleaner")
    assert repr(other) == "<step 'cleaner'>"


def notify(error: BaseException | None = None) -> None:
    """A hook; isolated steps need hooks another process can import."""


def train_model() -> int:
    return 1


def test_step_keeps_its_options() -> None:
    train = step(
        enable_cache=False,
        retry=Retry(max_retries=2, delay=0.5, backoff=2.0),
        runtime="isolated",
        on_failure=notify,
        on_success=notify,
        cache_expires_after=datetime.timedelta(minutes=2),
    )(train_model)

    config = train.config
    assert config.name == "train_model"
    assert config.enable_cache is False
    assert config.retry == Retry(max_retries=2, delay=0.5, backoff=2.0)
    assert config.runtime == "isolated"
    assert config.on_failure is notify and config.on_success is notify
    assert config.cache_expires_after == 120.0


def test_step_called_outside_a_pipeline_runs_its_function() -> None:
    @step
    def add(a: int, b: int = 2) -> int:
        return a + b

    assert add(1) == 3
    assert add(a=1, b=5) == 6


def test_step_keeps_the_wrapped_function_metadata() -> None:
    @step
    def documented(x: int) -> int:
        """Double x."""
        return 2 * x

    assert documented.__doc__ == "Double x."
    assert documented.__name__ == "documented"
    assert list(documented.signature.parameters) == ["x"]


def test_step_with_options_returns_a_changed_copy() -> None:
    isolated = module_level_step.with_options(runtime="isolated", retry=Retry(max_retries=1))

    assert isolated.config.runtime == "isolated"
    assert isolated.config.retry.max_retries == 1
    assert module_level_step.config.runtime is None
    assert isolated.fn is module_level_step.fn


def test_step_with_options_rejects_unknown_options() -> None:
    @step
    def train() -> int:
        return 1

    with pytest.raises(StepDefinitionError) as caught:
        train.with_options(runtim="isolated")

    assert str(caught.value) == (
        "step 'train': with_options() got unknown option(s) ['runtim']; accepted: name, "
        "enable_cache, retry, runtime, on_failure, on_success, output_materializers, "
        "cache_expires_after, timeout, pod"
    )


def test_step_source_hash_changes_with_the_body() -> None:
    @step
    def one() -> int:
        return 1

    @step
    def two() -> int:
        return 2

    assert one.source_hash != two.source_hash
    assert re.fullmatch(r"[0-9a-f]{64}", one.source_hash)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"runtime": "pod"},
            "step 'train': runtime='pod' is invalid; accepted: 'inline', 'isolated'",
        ),
        (
            {"retry": 3},
            "step 'train': retry=3 is invalid; expected Retry(max_retries=..., delay=..., "
            "backoff=...)",
        ),
        (
            {"enable_cache": "yes"},
            "step 'train': enable_cache='yes' is invalid; expected True or False",
        ),
        ({"on_failure": "notify"}, "step 'train': on_failure='notify' is not callable"),
        (
            {"cache_expires_after": 0},
            "step 'train': cache_expires_after=0 is invalid; expected seconds > 0 or a "
            "datetime.timedelta",
        ),
        (
            {"name": "has space"},
            "step name 'has space' is invalid; step names may use letters, digits, '_', '.', "
            "'-', starting with a letter or '_', at most 128",
        ),
        (
            {"output_materializers": {"model": Materializer}},
            "step 'train': output_materializers names the output 'model', but the step "
            "declares ['output']",
        ),
        (
            {"output_materializers": {"output": int}},
            "step 'train': output_materializers['output'] is <class 'int'>; expected a "
            "Materializer subclass",
        ),
    ],
)
def test_step_rejects_an_invalid_option(options: dict[str, Any], message: str) -> None:
    def train() -> int:
        return 1

    with pytest.raises(StepDefinitionError) as caught:
        step(**options)(train)

    assert str(caught.value) == message


def test_step_rejects_unknown_options() -> None:
    with pytest.raises(StepDefinitionError) as caught:
        step(retries=3)

    assert str(caught.value) == (
        "@step got unknown option(s) ['retries']; accepted: name, enable_cache, retry, runtime, "
        "on_failure, on_success, output_materializers, cache_expires_after, timeout, pod"
    )


@pytest.mark.parametrize("reserved", ["id", "after"])
def test_step_rejects_a_parameter_with_a_reserved_name(reserved: str) -> None:
    namespace: dict[str, Any] = {}
    exec(f"def train({reserved}): return 1", namespace)

    with pytest.raises(StepDefinitionError) as caught:
        step(namespace["train"])

    assert str(caught.value) == (
        f"step 'train' has a parameter named {reserved!r}, which is reserved for step calls "
        "(id, after); rename it"
    )


def test_step_rejects_variadic_parameters() -> None:
    def train(*rows: int) -> int:
        return 1

    with pytest.raises(StepDefinitionError) as caught:
        step(train)

    assert str(caught.value) == (
        "step 'train' takes *rows; steps need named parameters so that each input can be "
        "stored and cached on its own"
    )


def test_step_rejects_async_functions() -> None:
    async def fetch() -> int:
        return 1

    with pytest.raises(StepDefinitionError, match="an async or generator function"):
        step(fetch)


def test_step_rejects_decorating_a_step_twice() -> None:
    @step
    def train() -> int:
        return 1

    with pytest.raises(StepDefinitionError) as caught:
        step(train)

    assert str(caught.value) == "<step 'train'> is already a step; decorate it only once"


def test_step_rejects_an_output_named_twice() -> None:
    def split() -> tuple[Annotated[int, "part"], Annotated[int, "part"]]:
        return 1, 2

    with pytest.raises(StepDefinitionError) as caught:
        step(split)

    assert str(caught.value) == (
        "step 'split' declares the output 'part' twice; each output of a step needs its own name"
    )


def test_step_rejects_an_invalid_output_name() -> None:
    def train() -> Annotated[int, "my model"]:
        return 1

    with pytest.raises(StepDefinitionError, match="step 'train' names an output 'my model'"):
        step(train)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"max_retries": -1}, "Retry(max_retries=-1) is invalid: expected an int >= 0"),
        ({"delay": -0.5}, "Retry(delay=-0.5) is invalid: expected seconds >= 0"),
        ({"backoff": 0.5}, "Retry(backoff=0.5) is invalid: expected a factor >= 1"),
    ],
)
def test_retry_rejects_invalid_values(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(StepDefinitionError) as caught:
        Retry(**arguments)

    assert str(caught.value) == message


def test_retry_wait_starts_at_delay_and_grows_by_backoff() -> None:
    retry = Retry(max_retries=3, delay=0.5, backoff=3.0)

    assert [retry.wait_before(attempt) for attempt in (1, 2, 3, 4)] == [0.0, 0.5, 1.5, 4.5]


def test_step_isolated_must_be_importable_by_another_process() -> None:
    def train() -> int:
        return 1

    with pytest.raises(StepDefinitionError) as caught:
        step(runtime="isolated")(train)

    assert str(caught.value) == (
        "step 'train' is defined inside a function "
        "('test_step_isolated_must_be_importable_by_another_process.<locals>.train'); a step "
        "that runs in another process must be defined at module level"
    )


def test_step_isolated_hooks_must_be_importable_by_another_process() -> None:
    with pytest.raises(StepDefinitionError) as caught:
        step(runtime="isolated", on_failure=lambda error: None)(module_level_step.fn)

    assert str(caught.value) == (
        "the on_failure hook of step 'module_level_step' is a lambda; a step that runs in "
        "another process needs a function defined with def at module level"
    )


def test_step_made_isolated_by_with_options_is_checked_too() -> None:
    @step
    def local() -> int:
        return 1

    with pytest.raises(StepDefinitionError, match="step 'local' is defined inside a function"):
        local.with_options(runtime="isolated")


@step
def module_level_step() -> int:
    return 1

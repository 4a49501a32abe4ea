"""What step calls return inside a dynamic pipeline: output artifacts and futures.

- `OutputArtifact`: a stored output of a finished invocation. Passing it to another step
  wires a lineage edge without loading it in the pipeline's process; `.load()` loads it.
- `StepFuture`: an invocation started with `.submit()`. `.result()` waits and returns its
  output artifacts, `.load()` their values; indexing and iteration give one future per output.
- `MapResultsFuture`: the invocations of `.map()` or `.product()`, in order.
- `unmapped(value)`: passes a value whole to every invocation of a map.

Futures and lists of futures can be passed to other steps; the callee waits for them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from kstep._errors import KstepError, StepCallError

if TYPE_CHECKING:
    from kstep.stores.metadata import ArtifactVersionRecord


class OutputArtifact:
    """One stored output of a finished invocation in a dynamic pipeline."""

    __slots__ = ("_loader", "invocation_id", "output", "record", "run_id")

    def __init__(
        self,
        record: ArtifactVersionRecord,
        invocation_id: str,
        output: str,
        run_id: str,
        loader: Callable[[ArtifactVersionRecord, int | None], Any],
    ) -> None:
        self.record = record
        self.invocation_id = invocation_id
        self.output = output
        self.run_id = run_id
        self._loader = loader

    def __repr__(self) -> str:
        return (
            f"<OutputArtifact {self.output!r} of {self.invocation_id!r}: "
            f"{self.record.name!r} version {self.record.version}>"
        )

    @property
    def id(self) -> str:
        """The artifact version's id."""
        return self.record.id

    @property
    def name(self) -> str:
        """The artifact's name."""
        return self.record.name

    @property
    def version(self) -> int:
        """The artifact version's number."""
        return self.record.version

    @property
    def uri(self) -> str:
        """Where the artifact version's files live."""
        return self.record.uri

    def load(self) -> Any:
        """Load the value with its materializer."""
        return self._loader(self.record, None)

    def chunk(self, index: int) -> ArtifactChunk:
        """A reference to item `index` of this sequence output, to pass on unloaded."""
        if not isinstance(index, int) or isinstance(index, bool):
            raise StepCallError(f"chunk() takes an int index; got {index!r}")
        return ArtifactChunk(self, index)


class ArtifactChunk:
    """Item `index` of a sequence output; the step it is passed to loads only that item."""

    __slots__ = ("artifact", "index")

    def __init__(self, artifact: OutputArtifact | StepFuture, index: int) -> None:
        self.artifact = artifact
        self.index = index

    def __repr__(self) -> str:
        return f"<chunk {self.index} of {self.artifact!r}>"


class InvocationState:
    """Shared state of one invocation: its outcome once known, and who waits for it."""

    def __init__(self, run_id: str, invocation_id: str, output_names: tuple[str, ...]) -> None:
        self.run_id = run_id
        self.invocation_id = invocation_id
        self.output_names = output_names
        self.status = "pending"
        self.outputs: tuple[OutputArtifact, ...] = ()
        self.error: BaseException | None = None
        self.root: InvocationState = self
        self.observed = False
        self._done = threading.Event()
        self._callbacks: list[Callable[[InvocationState], None]] = []
        self._lock = threading.Lock()

    def done(self) -> bool:
        """Whether the invocation ended."""
        return self._done.is_set()

    def finish(
        self,
        status: str,
        outputs: tuple[OutputArtifact, ...] = (),
        error: BaseException | None = None,
        root: InvocationState | None = None,
    ) -> None:
        """Record the outcome and call everyone who waited for it."""
        with self._lock:
            self.status = status
            self.outputs = outputs
            self.error = error
            if root is not None:
                self.root = root
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)

    def on_done(self, callback: Callable[[InvocationState], None]) -> None:
        """Call `callback(self)` once the invocation ended (at once if it already has)."""
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(callback)
                return
        callback(self)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the outcome; False if `timeout` passed first."""
        return self._done.wait(timeout)

    def raise_if_failed(self) -> None:
        """Raise the invocation's exception; the failure then counts as handled."""
        if self.error is not None:
            self.observed = True
            self.root.observed = True
            raise self.error


class StepFuture:
    """An invocation started with `.submit()` in a dynamic pipeline."""

    def __init__(self, state: InvocationState) -> None:
        self._state = state

    def __repr__(self) -> str:
        return f"<StepFuture {self.invocation_id!r} {self._state.status}>"

    @property
    def invocation_id(self) -> str:
        """The invocation's id within its run."""
        return self._state.invocation_id

    def done(self) -> bool:
        """Whether the invocation ended (completed, cached, failed or skipped)."""
        return self._state.done()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the invocation ended, without raising its failure."""
        return self._state.wait(timeout)

    def result(self) -> Any:
        """Wait, then return the output artifact (a tuple for several outputs, None for none).

        Raises the step's own exception if it failed.
        """
        self._state.wait()
        self._state.raise_if_failed()
        outputs = self._state.outputs
        if not outputs:
            return None
        return outputs[0] if len(outputs) == 1 else outputs

    def load(self) -> Any:
        """Wait, then load the output values (a tuple for several outputs, None for none)."""
        result = self.result()
        if result is None:
            return None
        if isinstance(result, tuple):
            return tuple(artifact.load() for artifact in result)
        return result.load()

    def __getitem__(self, key: int | str) -> OutputFuture:
        names = self._state.output_names
        if isinstance(key, str):
            if key not in names:
                raise KeyError(
                    f"step invocation {self.invocation_id!r} has no output {key!r}; "
                    f"its outputs are {list(names)}"
                )
            return OutputFuture(self._state, names.index(key))
        if not -len(names) <= key < len(names):
            raise IndexError(
                f"step invocation {self.invocation_id!r} has {len(names)} outputs; "
                f"index {key} is out of range"
            )
        return OutputFuture(self._state, key % len(names))

    def __iter__(self) -> Iterator[OutputFuture]:
        return (OutputFuture(self._state, index) for index in range(len(self._state.output_names)))

    def __len__(self) -> int:
        return len(self._state.output_names)

    def chunk(self, index: int) -> ArtifactChunk:
        """A reference to item `index` of this future's (single) sequence output."""
        return ArtifactChunk(self, index)


class OutputFuture(StepFuture):
    """One output of a submitted invocation."""

    def __init__(self, state: InvocationState, index: int) -> None:
        super().__init__(state)
        self.index = index

    def __repr__(self) -> str:
        name = self._state.output_names[self.index]
        return f"<OutputFuture {name!r} of {self.invocation_id!r} {self._state.status}>"

    def result(self) -> OutputArtifact:
        self._state.wait()
        self._state.raise_if_failed()
        return self._state.outputs[self.index]

    def load(self) -> Any:
        return self.result().load()

    def __getitem__(self, key: int | str) -> OutputFuture:
        raise TypeError(f"{self!r} is a single output; it cannot be indexed")

    def __iter__(self) -> Iterator[OutputFuture]:
        raise TypeError(f"{self!r} is a single output; it cannot be unpacked")

    def __len__(self) -> int:
        return 1


class MapResultsFuture:
    """The invocations of one `.map()` or `.product()` call, in order."""

    def __init__(self, futures: list[StepFuture], output_names: tuple[str, ...]) -> None:
        self.futures = futures
        self.output_names = output_names

    def __repr__(self) -> str:
        return f"<MapResultsFuture of {len(self.futures)} invocations>"

    def __len__(self) -> int:
        return len(self.futures)

    def __getitem__(self, index: int) -> StepFuture:
        return self.futures[index]

    def __iter__(self) -> Iterator[StepFuture]:
        return iter(self.futures)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every invocation ended; False if `timeout` seconds passed first."""
        if timeout is None:
            return all(future.wait() for future in self.futures)
        deadline = time.monotonic() + timeout
        return all(future.wait(max(0.0, deadline - time.monotonic())) for future in self.futures)

    def done(self) -> bool:
        """Whether every invocation ended."""
        return all(future.done() for future in self.futures)

    def result(self) -> list[Any]:
        """The output artifacts of every invocation, in order."""
        return [future.result() for future in self.futures]

    def load(self) -> list[Any]:
        """The output values of every invocation, in order."""
        return [future.load() for future in self.futures]

    def unpack(self) -> tuple[list[OutputFuture], ...]:
        """One list per output (of futures), for steps with several outputs."""
        if len(self.output_names) < 2:
            raise KstepError(
                f"unpack() splits results by output, but the mapped step has "
                f"{len(self.output_names)} output(s); iterate over the results instead"
            )
        return tuple(
            [OutputFuture(future._state, index) for future in self.futures]
            for index in range(len(self.output_names))
        )


class unmapped:  # noqa: N801 - named like a function, as users call it
    """Pass a value whole to every invocation of `.map()` or `.product()`.

    Example:
        >>> scores = evaluate.map(model=unmapped(model), fold=[0, 1, 2])
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"unmapped({self.value!r})"

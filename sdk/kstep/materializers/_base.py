"""The `Materializer` base class and the registry that maps types to materializers."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import inspect
import logging
from typing import IO, Any, ClassVar, Protocol

from kstep._errors import MaterializerError

logger = logging.getLogger(__name__)

# Type path -> materializer class. User subclasses replace earlier entries; kstep's own
# built-ins never replace an entry, so a user's materializer wins even when a built-in
# module is imported after it.
_registry: dict[str, type[Materializer]] = {}

# Type path -> module that registers a built-in materializer for it. Imported on first use so
# that `import kstep` stays fast and numpy or pandas are never imported unless needed.
_lazy_modules: dict[str, str] = {
    "numpy.ndarray": "kstep.materializers._numpy",
    "pandas.core.frame.DataFrame": "kstep.materializers._pandas",
    "pandas.core.series.Series": "kstep.materializers._pandas",
    "pydantic.main.BaseModel": "kstep.materializers._pydantic",
}


class Location(Protocol):
    """Where one artifact version's files live, as a materializer sees it."""

    uri: str

    def open(self, relative_path: str, mode: str = "rb") -> IO[Any]:
        """Open a file inside the artifact's location."""

    def local_path(self, relative_path: str) -> str:
        """A local filesystem path for a file inside the location (for path-based libraries)."""

    def exists(self, relative_path: str) -> bool:
        """Whether a file exists inside the location."""


class Materializer:
    """Saves and loads one family of Python types.

    Subclasses declare `types` and implement `save` and `load`. They read and write only
    through `self.open(relative_path, mode)` (or `self.local_path(relative_path)` for
    libraries that need a path), which refuse any path outside the artifact's own location.

    Optional hooks: `extract_metadata(value)` returns key/value metadata stored with the
    artifact version; `content_hash(value)` returns a hash of the value so that equal values
    hit the cache (without it, the artifact version id stands in); `item_count()` and
    `load_item(index)` make a sequence splittable by `.map`.

    Example:
        >>> class CsvRowsMaterializer(Materializer):
        ...     types = (Rows,)
        ...     def save(self, value: Rows) -> None:
        ...         with self.open("rows.csv", "w") as f:
        ...             f.write(value.to_csv())
        ...     def load(self, data_type: type) -> Rows:
        ...         with self.open("rows.csv", "r") as f:
        ...             return Rows.from_csv(f.read())
    """

    types: ClassVar[tuple[type, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        builtin = cls.__module__.startswith("kstep.materializers.")
        for handled in cls.__dict__.get("types", ()):
            if not isinstance(handled, type):
                raise MaterializerError(
                    f"materializer {cls.__qualname__!r} lists {handled!r} in types; "
                    "types must be classes"
                )
            path = type_path(handled)
            if builtin:
                _registry.setdefault(path, cls)
            else:
                _registry[path] = cls

    def __init__(self, location: Location) -> None:
        self.location = location
        self.uri = location.uri

    @classmethod
    def key(cls) -> str:
        """The name stored with each artifact version to find this materializer again."""
        return type_path(cls)

    @classmethod
    def can_save(cls, value: Any) -> bool:
        """Whether this materializer can store `value` (it handles the value's type)."""
        return True

    def open(self, relative_path: str, mode: str = "rb") -> IO[Any]:
        """Open a file inside this artifact's location."""
        return self.location.open(relative_path, mode)

    def local_path(self, relative_path: str) -> str:
        """A local path for a file inside this artifact's location."""
        return self.location.local_path(relative_path)

    def save(self, value: Any) -> None:
        """Write `value` into the artifact's location."""
        raise NotImplementedError(f"{type(self).__qualname__} does not implement save()")

    def load(self, data_type: type) -> Any:
        """Read the value back as an instance of `data_type`."""
        raise NotImplementedError(f"{type(self).__qualname__} does not implement load()")

    def extract_metadata(self, value: Any) -> dict[str, Any]:
        """Return JSON metadata describing `value` (shape, length, ...)."""
        return {}

    def content_hash(self, value: Any) -> str | None:
        """Return a hash of `value`'s content, or None if it has none worth computing."""
        return None

    def item_count(self) -> int:
        """Number of items of a stored sequence."""
        raise MaterializerError(
            f"materializer {type(self).__qualname__!r} cannot split its artifacts into items; "
            "implement item_count() and load_item() to map over them"
        )

    def load_item(self, index: int) -> Any:
        """Load one item of a stored sequence."""
        raise MaterializerError(
            f"materializer {type(self).__qualname__!r} cannot load single items; "
            "implement item_count() and load_item() to map over its artifacts"
        )

    @classmethod
    def splittable(cls) -> bool:
        """Whether this materializer implements `item_count()` and `load_item()`."""
        return cls.item_count is not Materializer.item_count


def type_path(cls: type) -> str:
    """`module.QualName` of a class, as stored in the metadata store."""
    return f"{cls.__module__}.{cls.__qualname__}"


def materializer_for(value: Any) -> type[Materializer] | None:
    """The registered materializer for `value`'s type, walking its classes in MRO order."""
    for klass in type(value).__mro__:
        path = type_path(klass)
        materializer = _registry.get(path)
        if materializer is None and path in _lazy_modules:
            importlib.import_module(_lazy_modules[path])
            materializer = _registry.get(path)
        if materializer is not None and materializer.can_save(value):
            return materializer
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        from kstep.materializers._builtin import StructuredMaterializer

        return StructuredMaterializer
    return None


@functools.cache
def resolve_materializer(key: str) -> type[Materializer]:
    """Import the materializer class stored under `key` (its `module.QualName`)."""
    cls = import_type(key, "materializer")
    if not (isinstance(cls, type) and issubclass(cls, Materializer)):
        raise MaterializerError(f"{key!r} is not a Materializer subclass")
    return cls


# Types whose `type_path` names no attribute of `builtins`, so they cannot be imported by it.
_UNNAMED_BUILTINS: dict[str, Any] = {
    "builtins.NoneType": type(None),
    "builtins.ellipsis": type(Ellipsis),
    "builtins.NotImplementedType": type(NotImplemented),
}


@functools.cache
def import_type(path: str, what: str = "type") -> Any:
    """Import `module.QualName`, trying the longest importable module prefix first."""
    if path in _UNNAMED_BUILTINS:
        return _UNNAMED_BUILTINS[path]
    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            target: Any = importlib.import_module(module_name)
        except ImportError:
            continue
        try:
            for attribute in parts[split:]:
                target = getattr(target, attribute)
        except AttributeError:
            continue
        return target
    raise MaterializerError(
        f"the {what} {path!r} cannot be imported here; install or import the code that "
        "defines it before loading the artifact"
    )


_versions: dict[type[Materializer], str] = {}


def materializer_version(cls: type[Materializer]) -> str:
    """A hash of a materializer's source code: changing the code changes cache keys."""
    version = _versions.get(cls)
    if version is None:
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):
            source = type_path(cls)
        version = _versions[cls] = hashlib.sha256(source.encode()).hexdigest()[:16]
    return version


def materializer_for_type(annotation: Any) -> type[Materializer] | None:
    """The registered materializer for an annotated type, if it is a plain class."""
    if not isinstance(annotation, type):
        return None
    for klass in annotation.__mro__:
        path = type_path(klass)
        materializer = _registry.get(path)
        if materializer is None and path in _lazy_modules:
            importlib.import_module(_lazy_modules[path])
            materializer = _registry.get(path)
        if materializer is not None:
            return materializer
    return None

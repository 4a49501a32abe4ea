"""The local engine: the embedded default orchestration environment."""

from kstep.engine._local import LocalEngine

__all__ = ["LocalEngine"]

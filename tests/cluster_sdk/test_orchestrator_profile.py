"""The orchestrator's optional profile (`KSTEP_ORCHESTRATOR_PROFILE_PATH`)."""

from __future__ import annotations

import pstats
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kstep.cluster.orchestrator import _profiling


def _on_a_pool_thread() -> int:
    return sum(range(1000))


def _on_the_calling_thread() -> int:
    with ThreadPoolExecutor(2) as pool:
        return pool.submit(_on_a_pool_thread).result()


def test_the_profile_covers_threads_started_meanwhile_and_names_the_run(tmp_path: Path) -> None:
    with _profiling(str(tmp_path / "{run}.prof"), "my-run"):
        _on_the_calling_thread()

    functions = {name for _, _, name in pstats.Stats(str(tmp_path / "my-run.prof")).stats}
    assert {"_on_the_calling_thread", "_on_a_pool_thread"} <= functions
    assert threading.getprofile() is None
    assert sys.getprofile() is None


def test_without_a_path_nothing_is_profiled() -> None:
    with _profiling(None, "my-run"):
        assert threading.getprofile() is None
        assert sys.getprofile() is None

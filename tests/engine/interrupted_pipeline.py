"""A pipeline process for the interrupt test: `python -m engine.interrupted_pipeline DIR`.

Its only step marks DIR/started and then sleeps far longer than the test waits, so that
Ctrl-C lands inside the step even on a loaded machine; the interrupt cuts the sleep short.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from kstep import pipeline, step


@step(enable_cache=False)
def linger(directory: str) -> int:
    (Path(directory) / "started").touch()
    time.sleep(30)
    return 1


@pipeline
def interrupted(directory: str) -> None:
    linger(directory)


if __name__ == "__main__":
    interrupted(sys.argv[1])

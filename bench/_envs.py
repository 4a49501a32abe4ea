"""Virtual environments of the peers, created once and cached outside the repository.

Each peer gets its own environment under `$KSTEP_BENCH_CACHE` (default
`~/.cache/kstep/bench`), named after the version it pins. An environment counts as ready only
once its marker file exists, so an interrupted install is redone on the next run.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# botocore (pulled in by some peers' extras) wants python-dateutil<3; without the pin pip
# backtracks for minutes.
COMMON_PINS = ("numpy", "python-dateutil>=2.8,<3")


@dataclass(frozen=True)
class PeerEnv:
    """How to build one peer's environment."""

    tool: str
    directory_name: str
    requirements: tuple[str, ...]
    distribution: str


PEERS = {
    "zenml": PeerEnv("zenml", "venv-zenml-0.98.0", ("zenml[local]==0.98.0",), "zenml"),
    "prefect": PeerEnv("prefect", "venv-prefect-3.x", ("prefect>=3,<4",), "prefect"),
}


def cache_root() -> str:
    """Where peer environments and scratch directories live."""
    default = os.path.join(os.path.expanduser("~"), ".cache", "kstep", "bench")
    return os.environ.get("KSTEP_BENCH_CACHE") or default


def python_of(directory: str) -> str:
    """The interpreter of a virtual environment."""
    return os.path.join(directory, "bin", "python")


def ensure_env(peer: PeerEnv, log_path: str) -> tuple[str | None, str]:
    """Create the peer's environment if needed; return (python or None, what happened)."""
    directory = os.path.join(cache_root(), peer.directory_name)
    marker = os.path.join(directory, "kstep-bench-ready.json")
    if os.path.exists(marker):
        return python_of(directory), "cached"

    # A base interpreter, not the kstep venv's, so nothing of kstep leaks into the peer.
    base = getattr(sys, "_base_executable", sys.executable)
    os.makedirs(cache_root(), exist_ok=True)
    commands = [
        [base, "-m", "venv", "--clear", directory],
        [python_of(directory), "-m", "pip", "install", "-q", "-U", "pip"],
        [python_of(directory), "-m", "pip", "install", "-q", *peer.requirements, *COMMON_PINS],
    ]
    with open(log_path, "a", encoding="utf-8") as log:
        for command in commands:
            log.write(f"$ {' '.join(command)}\n")
            log.flush()
            done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
            if done.returncode != 0:
                return None, f"`{' '.join(command[-3:])}` failed with code {done.returncode}"

    with open(marker, "w", encoding="utf-8") as file:
        json.dump({"requirements": [*peer.requirements, *COMMON_PINS]}, file)
    return python_of(directory), "created"


def package_versions(python: str, names: list[str]) -> dict[str, str | None]:
    """Installed versions of distributions, as seen by `python`."""
    script = (
        "import json, sys\n"
        "from importlib.metadata import version, PackageNotFoundError\n"
        "out = {}\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        out[name] = version(name)\n"
        "    except PackageNotFoundError:\n"
        "        out[name] = None\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [python, "-c", script, *names], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return dict.fromkeys(names)
    return dict(json.loads(done.stdout))


def module_origin(python: str, module: str) -> str | None:
    """The directory `python`, in this process's environment, imports package `module` from."""
    script = f"import os, {module}; print(os.path.dirname({module}.__file__))"
    done = subprocess.run([python, "-c", script], capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None

"""The tools under comparison and how to start one worker process for each.

Every sample runs in a fresh process with a fresh scratch directory holding the tool's
home, database and artifact store, so no sample sees another's state.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from _envs import cache_root

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
SAMPLE_TIMEOUT_S = 900


@dataclass
class Tool:
    """A tool under comparison, ready to run once its interpreter is known."""

    name: str
    label: str
    module: str
    script: str
    python: str | None = None
    unavailable: str | None = None

    def environment(self, scratch: str) -> dict[str, str]:
        """The worker's environment: the caller's, minus any tool settings, plus scratch."""
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("KSTEP_", "ZENML_", "PREFECT_")) and key != "PYTHONPATH"
        }
        if self.name == "kstep":
            # The caller's PYTHONPATH, if any, so a source tree named there (a worktree's
            # sdk/, say) is the kstep measured; the peers get none of it.
            if os.environ.get("PYTHONPATH"):
                env["PYTHONPATH"] = os.environ["PYTHONPATH"]
            env["KSTEP_HOME"] = os.path.join(scratch, "kstep-home")
        elif self.name == "zenml":
            env["ZENML_CONFIG_PATH"] = os.path.join(scratch, "zenml-config")
            env["ZENML_ANALYTICS_OPT_IN"] = "false"
            env["AUTO_OPEN_DASHBOARD"] = "false"
        elif self.name == "prefect":
            env["PREFECT_HOME"] = os.path.join(scratch, "prefect-home")
            env["PREFECT_LOCAL_STORAGE_PATH"] = os.path.join(scratch, "prefect-home", "storage")
            env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
            # The default 20 s to start the ephemeral server is too short on a busy machine.
            env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
            env["DO_NOT_TRACK"] = "1"
        return env


def make_tools() -> dict[str, Tool]:
    """kstep (this interpreter) and the peers (interpreters filled in once installed)."""
    return {
        "kstep": Tool("kstep", "kstep", "kstep", "kstep_workloads.py", python=sys.executable),
        "zenml": Tool("zenml", "ZenML", "zenml", "peers/zenml_workloads.py"),
        "prefect": Tool("prefect", "Prefect", "prefect", "peers/prefect_workloads.py"),
    }


def run_sample(tool: Tool, args: list[str], log_dir: str, whole_process: bool) -> dict[str, Any]:
    """Run one worker process; return its RESULT fields, or `{"error": ...}`."""
    assert tool.python is not None
    scratch_parent = os.path.join(cache_root(), "scratch")
    os.makedirs(scratch_parent, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=f"{tool.name}-", dir=scratch_parent)
    label = "-".join([tool.name, *args[:1]]) if args else f"{tool.name}-import"
    log_path = os.path.join(log_dir, f"{label}-{os.path.basename(scratch)}.log")
    try:
        env = tool.environment(scratch)
        if whole_process:
            return _time_import(tool, env, scratch, log_path)
        # The worker and `_worker.py` run from copies in the scratch directory: ZenML only
        # runs pipelines whose source lies under its source root, which is that directory.
        shutil.copy(os.path.join(BENCH_DIR, "_worker.py"), scratch)
        script = shutil.copy(os.path.join(BENCH_DIR, tool.script), scratch)
        return _run_worker([tool.python, script, *args], env, scratch, log_path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run_worker(command: list[str], env: dict[str, str], cwd: str, log_path: str) -> dict[str, Any]:
    with open(log_path, "w", encoding="utf-8") as log:
        try:
            done = subprocess.run(
                command,
                env=env,
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                timeout=SAMPLE_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {SAMPLE_TIMEOUT_S} s", "log": log_path}
        log.write(done.stdout)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT ") :]))
    return {"error": f"exited with code {done.returncode} and no result", "log": log_path}


def _time_import(tool: Tool, env: dict[str, str], cwd: str, log_path: str) -> dict[str, Any]:
    assert tool.python is not None
    timings: dict[str, Any] = {}
    for key, code in (("startup_s", "pass"), ("wall_s", f"import {tool.module}")):
        start = time.perf_counter()
        done = subprocess.run(
            [tool.python, "-c", code], env=env, cwd=cwd, capture_output=True, text=True
        )
        timings[key] = time.perf_counter() - start
        if done.returncode != 0:
            with open(log_path, "w", encoding="utf-8") as log:
                log.write(done.stderr)
            return {"error": f"`{code}` exited with code {done.returncode}", "log": log_path}

    # The import alone, timed inside a third process: without interpreter start-up and
    # site-packages hooks (an editable install adds its own finder there).
    probe = (
        "import time; t = time.perf_counter(); "
        f"import {tool.module}; print(time.perf_counter() - t)"
    )
    done = subprocess.run(
        [tool.python, "-c", probe], env=env, cwd=cwd, capture_output=True, text=True
    )
    if done.returncode == 0:
        timings["import_only_s"] = float(done.stdout.strip().splitlines()[-1])
    return timings

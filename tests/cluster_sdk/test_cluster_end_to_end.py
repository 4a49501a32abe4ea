"""A run submitted from the SDK, executed by the operator, followed to its end.

Everything is real but the kubelet: the API server with kstep's CRDs, the Job controller, the
operator (`kstep-operator run` with its inline executor), Postgres as the metadata store and
an S3 server as the artifact store. The kubelet stand-in runs step pods as local processes of
this environment, so they see kstep but not the examples: the steps can only come from the code
archive that `submit` packed.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_sdk_support import EXAMPLES

from kstep._settings import Settings
from kstep.cluster.submit import submit
from kstep.runner._references import import_reference
from testbed.processes import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.s3, pytest.mark.slow]


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process this test started, by its own process group."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


@pytest.fixture
def store_environment(s3: Any, fresh_postgres_url: str) -> dict[str, str]:
    """The store settings the operator, the step pods and this test share."""
    return {
        "KSTEP_METADATA_URL": fresh_postgres_url,
        "KSTEP_ARTIFACT_ROOT": s3.uri("kstep"),
        "KSTEP_S3_ENDPOINT_URL": s3.endpoint_url,
        "KSTEP_S3_REGION": s3.region,
        "AWS_ACCESS_KEY_ID": s3.access_key_id,
        "AWS_SECRET_ACCESS_KEY": s3.secret_access_key,
        "AWS_DEFAULT_REGION": s3.region,
    }


@pytest.fixture
def operator(
    kstep_crds: Any,
    kubelet_standin: Any,
    namespace: str,
    store_environment: dict[str, str],
    tmp_path: Path,
) -> Iterator[Path]:
    """The operator watching `namespace`, with its inline executor; yields its log file."""
    from kubernetes import client

    with kstep_crds.api_client() as api_client:
        core = client.CoreV1Api(api_client)
        core.create_namespaced_secret(
            namespace,
            {
                "metadata": {"name": "kstep-stores"},
                "data": {
                    key: base64.b64encode(value.encode()).decode()
                    for key, value in store_environment.items()
                },
            },
        )
        core.create_namespaced_service_account(namespace, {"metadata": {"name": "kstep-step"}})

    socket = str(tmp_path / "executor.sock")
    log = tmp_path / "operator.log"
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KSTEP_")},
        **store_environment,
        "KSTEP_HOME": str(tmp_path / "operator-home"),
        "KUBECONFIG": str(kstep_crds.admin_kubeconfig),
        "KSTEP_OPERATOR_NAMESPACES": json.dumps([namespace]),
        "KSTEP_OPERATOR_METRICS_PORT": "0",
        "KSTEP_OPERATOR_EXECUTOR_SOCKET": socket,
    }
    with open(log, "wb") as output:
        # The executor is started here, not by the operator, so that this test owns its PID.
        executor = subprocess.Popen(
            [sys.executable, "-m", "kstep_operator", "executor", "--socket", socket],
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        operator = subprocess.Popen(
            [sys.executable, "-m", "kstep_operator", "run"],
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield log
    finally:
        stop(operator)
        stop(executor)


def test_submit_runs_the_fan_out_example_through_the_operator_from_a_code_archive(
    operator: Path,
    kstep_crds: Any,
    namespace: str,
    store_environment: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kubernetes import client

    for key, value in store_environment.items():
        monkeypatch.setenv(key, value)
    settings = Settings(home=str(tmp_path / "home"))
    fan_out = import_reference(f"{EXAMPLES}/fan_out.py:fan_out")
    seen: list[tuple[str, str]] = []

    run = submit(
        fan_out,
        {"size": 100, "shards": 3},
        namespace=namespace,
        kubeconfig=kstep_crds.admin_kubeconfig,
        settings=settings,
    )
    started = time.monotonic()
    try:
        finished = run.wait(timeout=240, on_step=lambda step, phase: seen.append((step, phase)))
    except BaseException:
        print(operator.read_text(encoding="utf-8", errors="replace")[-20_000:])
        raise

    data = [float(i % 11) for i in range(100)]
    assert finished.status == "completed", finished.message
    assert finished.steps["combine"].outputs["total"].load() == sum(v * v for v in data)
    assert finished.steps["score_heavy"].runtime == "isolated"
    assert {step for step, phase in seen if phase == "completed"} == {
        "make_data",
        "score",
        "score_2",
        "score_heavy",
        "combine",
        "report",
    }
    assert f"sum of squares: {sum(v * v for v in data)}" in finished.steps["report"].logs()

    # The isolated step ran as a Job whose pod reported the runner's termination message.
    # The step ends when the runner records its outcome, so the run may end before the pod's
    # status says it terminated.
    heavy = next(step for step in run.steps() if step.invocation_id == "score_heavy")
    assert heavy.job_name is not None
    with kstep_crds.api_client() as api_client:
        core = client.CoreV1Api(api_client)

        def terminated_state() -> Any:
            pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={heavy.job_name}")
            statuses = pods.items[0].status.container_statuses if pods.items else None
            return statuses[0].state.terminated if statuses else None

        wait_until(terminated_state, timeout=30, what="the isolated step's pod terminated")
        terminated = terminated_state()
    message = json.loads(terminated.message)
    assert message["status"] == "completed"
    assert message["outputs"] == {"partial": finished.steps["score_heavy"].outputs["partial"].id}
    print(f"fan_out ran on the cluster in {time.monotonic() - started:.1f} s")
    run.close()

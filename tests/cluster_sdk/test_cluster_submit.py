"""Submitting and following runs: the API server's answers, without and with a real one.

The tests marked `cluster` run against the test bed's real kube-apiserver with kstep's CRDs
applied. No operator runs there: where a test needs one, a thread plays its part, writing
StepRuns and statuses the way the operator does, so that the watch, the callbacks and the
final read from the metadata store are exercised against real watch streams.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_sdk_support import EXAMPLES, kubectl

from kstep import RunFailed
from kstep._errors import ClusterError, CodeArchiveError, NotFoundError
from kstep._settings import Settings
from kstep.cluster import names
from kstep.cluster._kube import api_error, connect
from kstep.cluster.code import unpack_code
from kstep.cluster.render import render_pipeline_run, to_yaml
from kstep.cluster.specs import API_VERSION, GROUP, VERSION, CodeSpec
from kstep.cluster.submit import (
    ClusterRun,
    ClusterRunStatus,
    ClusterStepRun,
    _redacted,
    create_pipeline_run,
    submit,
)
from kstep.runner._references import import_reference
from kstep.stores import Stores
from kstep.stores.artifacts import open_artifact_store
from kstep.stores.metadata import RunRecord, utcnow


def training() -> Any:
    return import_reference(f"{EXAMPLES}/quickstart.py:training")


# ------------------------------------------------------------------ without a cluster


KUBECONFIG = """
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: "https://127.0.0.1:1"}
users:
- name: admin
  user: {token: secret}
contexts:
- name: ml
  context: {cluster: test, user: admin, namespace: ml}
- name: plain
  context: {cluster: test, user: admin}
current-context: ml
"""


def test_connect_uses_the_namespace_of_the_kubeconfig_context(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG, encoding="utf-8")

    current = connect(path)
    plain = connect(path, context="plain")

    assert current[1] == "ml"
    assert plain[1] == "default"
    assert current[0].configuration.host == "https://127.0.0.1:1"


def test_a_kubeconfig_client_checks_its_token_at_most_every_ten_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG, encoding="utf-8")
    configuration = connect(path)[0].configuration

    # A check copies the kubeconfig's settings into the client again, the host among them.
    assert configuration.get_api_key_with_prefix("BearerToken") == "Bearer secret"
    configuration.host = "https://moved:2"
    for _ in range(5):
        assert configuration.get_api_key_with_prefix("BearerToken") == "Bearer secret"
    checked_meanwhile = configuration.host != "https://moved:2"
    started = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: started + 11)
    configuration.get_api_key_with_prefix("BearerToken")

    assert not checked_meanwhile
    assert configuration.host == "https://127.0.0.1:1"


def test_connect_names_the_kubeconfig_it_cannot_load(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match=r"cannot load the kubeconfig .*/missing \(context"):
        connect(tmp_path / "missing")


def test_submit_refuses_to_pack_code_into_a_local_artifact_store(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG, encoding="utf-8")

    with pytest.raises(CodeArchiveError, match="pods on a cluster cannot read"):
        submit(training(), kubeconfig=path)


def test_api_error_carries_the_servers_message_and_names_the_action() -> None:
    from kubernetes.client.exceptions import ApiException

    error = ApiException(status=422, reason="Unprocessable Entity")
    error.body = json.dumps(
        {
            "kind": "Status",
            "message": 'PipelineRun.kstep.dev "x" is invalid: spec.parallelism: Invalid value',
            "reason": "Invalid",
            "code": 422,
        }
    )

    converted = api_error(error, "creating PipelineRun ml/x")

    assert str(converted) == (
        'creating PipelineRun ml/x failed: PipelineRun.kstep.dev "x" is invalid: '
        "spec.parallelism: Invalid value (HTTP 422, Invalid)"
    )
    assert (converted.status, converted.reason) == (422, "Invalid")


def test_api_error_explains_an_unreachable_server() -> None:
    converted = api_error(ConnectionRefusedError("refused"), "reading PipelineRun ml/x")

    assert str(converted) == (
        "reading PipelineRun ml/x failed: the API server cannot be reached: refused"
    )
    assert converted.status is None


def test_cluster_run_status_reads_phase_counts_and_reason() -> None:
    status = ClusterRunStatus.of(
        {
            "status": {
                "phase": "failed",
                "stepCounts": {"completed": 2, "failed": 1},
                "failedStep": "fit",
                "message": "step 'fit' failed",
                "conditions": [{"type": "Succeeded", "status": "False", "reason": "StepFailed"}],
            }
        }
    )

    assert status.finished
    assert (status.phase, status.reason, status.failed_step) == ("failed", "StepFailed", "fit")
    assert status.step_counts == {"completed": 2, "failed": 1}
    assert ClusterRunStatus.of({}).phase == "pending"


def test_cluster_step_run_reads_a_step_run_object() -> None:
    step = ClusterStepRun.of(
        {
            "metadata": {"name": "r-fit-abc123"},
            "spec": {"invocationId": "fit"},
            "status": {"phase": "cached", "cached": True, "outputs": {"model": "a" * 32}},
        }
    )

    assert (step.name, step.invocation_id, step.phase, step.cached) == (
        "r-fit-abc123",
        "fit",
        "cached",
        True,
    )
    assert step.outputs == {"model": "a" * 32}


def test_redacted_hides_the_password_of_a_database_url() -> None:
    assert _redacted("postgresql+psycopg://kstep:s3cret@db:5432/kstep") == (
        "postgresql+psycopg://kstep:***@db:5432/kstep"
    )
    assert _redacted("sqlite:////tmp/kstep.db") == "sqlite:////tmp/kstep.db"


# ------------------------------------------------------------------ on the test bed


@pytest.fixture
def kubeconfig(kstep_crds: Any) -> Path:
    return Path(kstep_crds.admin_kubeconfig)


@pytest.fixture
def api_client(kubeconfig: Path) -> Iterator[Any]:
    client, _ = connect(kubeconfig)
    yield client
    client.close()


def get_pipeline_run(api_client: Any, namespace: str, name: str) -> dict[str, Any]:
    from kubernetes import client

    found: dict[str, Any] = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "pipelineruns", name
    )
    return found


def differences(found: Any, expected: Any, path: str = "spec") -> list[str]:
    """Where two JSON values differ, as paths (equal numbers of any type are equal)."""
    if isinstance(found, dict) and isinstance(expected, dict):
        problems = [f"{path}.{key}: missing" for key in expected if key not in found]
        problems += [f"{path}.{key}: unexpected" for key in found if key not in expected]
        for key in sorted(set(found) & set(expected)):
            problems += differences(found[key], expected[key], f"{path}.{key}")
        return problems
    if isinstance(found, list) and isinstance(expected, list) and len(found) == len(expected):
        problems = []
        for index, (left, right) in enumerate(zip(found, expected, strict=True)):
            problems += differences(left, right, f"{path}[{index}]")
        return problems
    return [] if found == expected else [f"{path}: {found!r} != {expected!r}"]


@pytest.mark.cluster
def test_submit_creates_the_pipeline_run(kubeconfig: Path, namespace: str, api_client: Any) -> None:
    run = submit(
        training(),
        {"rows": 50},
        namespace=namespace,
        name="training-submitted",
        image="kstep:test",
        pack=False,
        kubeconfig=kubeconfig,
    )

    created = get_pipeline_run(api_client, namespace, "training-submitted")
    expected = render_pipeline_run(
        training(), {"rows": 50}, name="training-submitted", code=CodeSpec(image="kstep:test")
    )
    assert (run.name, run.namespace, run.uid) == (
        "training-submitted",
        namespace,
        created["metadata"]["uid"],
    )
    assert differences(created["spec"], expected["spec"]) == []
    assert created["metadata"]["labels"] == {"kstep.dev/pipeline": "training"}
    assert run.status() == ClusterRunStatus("pending")
    assert run.steps() == []
    run.close()


@pytest.mark.cluster
def test_submit_packs_the_code_into_the_s3_artifact_store(
    kubeconfig: Path,
    namespace: str,
    api_client: Any,
    s3: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    settings = Settings(
        home=str(tmp_path / "home"),
        artifact_root=s3.uri("kstep"),
        s3_endpoint_url=s3.endpoint_url,
        s3_region=s3.region,
    )

    run = submit(training(), namespace=namespace, kubeconfig=kubeconfig, settings=settings)

    code = CodeSpec.model_validate(
        get_pipeline_run(api_client, namespace, run.name)["spec"]["code"]
    )
    assert code.archive == s3.uri(f"kstep/code/{code.archive_sha256}.tar.gz")
    directory = unpack_code(code, open_artifact_store(settings), str(tmp_path / "unpacked"))
    assert (Path(directory) / "quickstart.py").read_bytes() == (
        EXAMPLES / "quickstart.py"
    ).read_bytes()
    run.close()


@pytest.mark.cluster
def test_create_pipeline_run_surfaces_the_servers_message_for_a_schema_rejection(
    namespace: str, api_client: Any
) -> None:
    manifest = render_pipeline_run(training(), name="rejected")
    manifest["spec"]["parallelism"] = 0

    with pytest.raises(ClusterError) as caught:
        create_pipeline_run(api_client, manifest, namespace)

    message = str(caught.value)
    assert message.startswith(f"creating PipelineRun {namespace}/rejected failed: ")
    assert 'PipelineRun.kstep.dev "rejected" is invalid' in message
    assert "spec.parallelism" in message
    assert "should be greater than or equal to 1" in message
    assert caught.value.status == 422


@pytest.mark.cluster
def test_create_pipeline_run_refuses_unknown_fields_instead_of_dropping_them(
    namespace: str, api_client: Any
) -> None:
    manifest = render_pipeline_run(training(), name="unknown-field")
    manifest["spec"]["definitions"]["fit"]["gpus"] = 1

    with pytest.raises(ClusterError) as caught:
        create_pipeline_run(api_client, manifest, namespace)

    assert 'unknown field "spec.definitions.fit.gpus"' in str(caught.value)


@pytest.mark.cluster
def test_kubectl_apply_accepts_the_rendered_yaml_unchanged(
    kubeconfig: Path, namespace: str, api_client: Any
) -> None:
    manifests = [
        render_pipeline_run(training(), {"rows": 10}, name="applied-training"),
        render_pipeline_run(
            import_reference(f"{EXAMPLES}/fan_out.py:fan_out"), name="applied-fan-out"
        ),
        render_pipeline_run(
            import_reference(f"{EXAMPLES}/dynamic_tuning.py:tuning"), name="applied-tuning"
        ),
    ]
    text = "---\n".join(to_yaml(manifest) for manifest in manifests)

    applied = kubectl(kubeconfig, "apply", "-n", namespace, "-f", "-", stdin=text)

    assert applied.returncode == 0, applied.stderr
    for manifest in manifests:
        stored = get_pipeline_run(api_client, namespace, manifest["metadata"]["name"])
        # Nothing pruned, nothing defaulted: the server keeps exactly what was rendered.
        assert differences(stored["spec"], manifest["spec"]) == []


@pytest.mark.cluster
def test_kubectl_server_side_apply_keeps_a_literal_null_parameter(
    kubeconfig: Path, namespace: str, api_client: Any
) -> None:
    from test_cluster_render import with_none

    manifest = render_pipeline_run(with_none, name="applied-none")

    applied = kubectl(
        kubeconfig, "apply", "--server-side", "-n", namespace, "-f", "-", stdin=to_yaml(manifest)
    )

    assert applied.returncode == 0, applied.stderr
    stored = get_pipeline_run(api_client, namespace, "applied-none")
    assert differences(stored["spec"], manifest["spec"]) == []
    assert stored["spec"]["steps"][1]["inputs"]["scale"] == {"param": None}


@pytest.mark.cluster
def test_cancel_sets_spec_status_to_cancelled(
    kubeconfig: Path, namespace: str, api_client: Any
) -> None:
    run = submit(training(), namespace=namespace, pack=False, kubeconfig=kubeconfig)

    run.cancel()

    assert get_pipeline_run(api_client, namespace, run.name)["spec"]["status"] == "Cancelled"
    run.close()


@pytest.mark.cluster
def test_attach_names_a_run_that_does_not_exist(kubeconfig: Path, namespace: str) -> None:
    with pytest.raises(ClusterError) as caught:
        ClusterRun.attach("missing-run", namespace=namespace, kubeconfig=kubeconfig)

    assert str(caught.value) == (
        f"reading PipelineRun {namespace}/missing-run failed: pipelineruns.kstep.dev "
        '"missing-run" not found (HTTP 404, NotFound)'
    )


@pytest.mark.cluster
def test_wait_times_out_naming_the_run_and_its_phase(kubeconfig: Path, namespace: str) -> None:
    run = submit(training(), namespace=namespace, pack=False, kubeconfig=kubeconfig)

    started = time.monotonic()
    with pytest.raises(TimeoutError) as caught:
        run.wait(timeout=1)

    assert time.monotonic() - started < 10
    assert str(caught.value) == (
        f"PipelineRun {namespace}/{run.name} did not finish within 1 s; it is pending"
    )
    run.close()


class OperatorStandIn:
    """Writes StepRuns and statuses of one run as the operator would, on its own thread."""

    def __init__(self, api_client: Any, run: ClusterRun, manifest: dict[str, Any]) -> None:
        from kubernetes import client

        self.api = client.CustomObjectsApi(api_client)
        self.run = run
        self.manifest = manifest
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._play, daemon=True)

    def start(self, final_phase: str) -> None:
        self.final_phase = final_phase
        self.thread.start()

    def join(self) -> None:
        self.thread.join(timeout=60)
        if self.error is not None:
            raise self.error

    def _play(self) -> None:
        try:
            # Give the waiting side time to list and open its watches first.
            time.sleep(1.0)
            self._status("pipelineruns", self.run.name, {"phase": "running"})
            for invocation in self.manifest["spec"]["steps"]:
                name = names.step_run_name(self.run.name, invocation["id"])
                self._create_step_run(name, invocation)
                self._status("stepruns", name, {"phase": "running", "attempts": 1})
                last = invocation is self.manifest["spec"]["steps"][-1]
                phase = "failed" if last and self.final_phase == "failed" else "completed"
                self._status("stepruns", name, {"phase": phase, "attempts": 1})
            counts = {"completed": len(self.manifest["spec"]["steps"])}
            self._status(
                "pipelineruns",
                self.run.name,
                {
                    "phase": self.final_phase,
                    "runId": names.run_id(str(self.run.uid)),
                    "stepCounts": counts,
                    "message": "step 'evaluate' failed: ValueError: bad" if counts else None,
                    "failedStep": "evaluate" if self.final_phase == "failed" else None,
                },
            )
        except BaseException as error:
            self.error = error

    def _create_step_run(self, name: str, invocation: dict[str, Any]) -> None:
        spec = self.manifest["spec"]
        self.api.create_namespaced_custom_object(
            GROUP,
            VERSION,
            self.run.namespace,
            "stepruns",
            {
                "apiVersion": API_VERSION,
                "kind": "StepRun",
                "metadata": {
                    "name": name,
                    "labels": {names.LABEL_RUN: names.label_value(self.run.name)},
                },
                "spec": {
                    "pipelineRun": self.run.name,
                    "runId": names.run_id(str(self.run.uid)),
                    "invocationId": invocation["id"],
                    "definition": spec["definitions"][invocation["definition"]],
                },
            },
        )

    def _status(self, plural: str, name: str, status: dict[str, Any]) -> None:
        self.api.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            self.run.namespace,
            plural,
            name,
            {"status": {k: v for k, v in status.items() if v is not None}},
        )


def record_run(run: ClusterRun, status: str) -> None:
    """The run's row in the metadata store, as the operator writes it."""
    stores = Stores.open(Settings())
    stores.metadata.create_run(
        RunRecord(
            id=names.run_id(str(run.uid)),
            name=run.name,
            pipeline_name="training",
            mode="static",
            status=status,
            execution_mode="continue_on_failure",
            parameters={},
            started_at=utcnow(),
            finished_at=utcnow(),
        )
    )
    stores.metadata.close()


@pytest.mark.cluster
def test_wait_reports_each_step_phase_and_returns_the_run_from_the_metadata_store(
    kubeconfig: Path, namespace: str, api_client: Any
) -> None:
    run = submit(training(), namespace=namespace, pack=False, kubeconfig=kubeconfig)
    manifest = get_pipeline_run(api_client, namespace, run.name)
    record_run(run, "completed")
    operator = OperatorStandIn(api_client, run, manifest)
    seen: list[tuple[str, str]] = []

    operator.start("completed")
    finished = run.wait(timeout=60, on_step=lambda step, phase: seen.append((step, phase)))
    operator.join()

    assert finished.name == run.name
    assert finished.id == names.run_id(str(run.uid))
    assert finished.status == "completed"
    for invocation in ("load_rows", "split", "fit", "evaluate"):
        phases = [phase for step, phase in seen if step == invocation]
        assert phases == ["pending", "running", "completed"], (invocation, seen)
    assert [step.phase for step in run.steps()] == ["completed"] * 4
    assert run.status().step_counts == {"completed": 4}
    run.close()


@pytest.mark.cluster
def test_wait_raises_run_failed_when_the_run_fails(
    kubeconfig: Path, namespace: str, api_client: Any
) -> None:
    run = submit(training(), namespace=namespace, pack=False, kubeconfig=kubeconfig)
    manifest = get_pipeline_run(api_client, namespace, run.name)
    record_run(run, "failed")
    operator = OperatorStandIn(api_client, run, manifest)

    operator.start("failed")
    with pytest.raises(RunFailed) as caught:
        run.wait(timeout=60)
    operator.join()

    assert str(caught.value) == (
        f"pipeline run {run.name!r} ended failed at step 'evaluate': step 'evaluate' failed: "
        "ValueError: bad"
    )
    assert caught.value.run.status == "failed"
    run.close()


@pytest.mark.cluster
def test_wait_explains_a_metadata_store_without_the_run(
    kubeconfig: Path, namespace: str, api_client: Any
) -> None:
    run = submit(training(), namespace=namespace, pack=False, kubeconfig=kubeconfig)
    manifest = get_pipeline_run(api_client, namespace, run.name)
    operator = OperatorStandIn(api_client, run, manifest)

    operator.start("completed")
    with pytest.raises(NotFoundError) as caught:
        run.wait(timeout=60)
    operator.join()

    assert f"PipelineRun {namespace}/{run.name} ended completed, but the metadata store" in str(
        caught.value
    )
    assert "set KSTEP_METADATA_URL to the store the cluster writes to" in str(caught.value)
    run.close()


@pytest.mark.cluster
def test_wait_fails_when_the_run_is_deleted(
    kubeconfig: Path, namespace: str, api_client: Any
) -> None:
    from kubernetes import client

    run = submit(training(), namespace=namespace, pack=False, kubeconfig=kubeconfig)

    def delete() -> None:
        time.sleep(1.0)
        client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
            GROUP, VERSION, namespace, "pipelineruns", run.name
        )

    threading.Thread(target=delete, daemon=True).start()
    with pytest.raises(ClusterError, match="was deleted before it finished"):
        run.wait(timeout=30)
    run.close()

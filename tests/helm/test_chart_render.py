"""The Helm chart, rendered without a cluster: lint, golden manifests, schema, conventions.

Golden files in `golden/` hold the rendering of each `ci/` scenario; after a deliberate change,
regenerate them with `KSTEP_UPDATE_GOLDEN=1 pytest tests/helm`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_support import (
    CHART,
    GOLDEN,
    ROOT,
    SCENARIOS,
    documents,
    find,
    helm_template,
    render,
    values_file,
)

UPDATE_GOLDEN = os.environ.get("KSTEP_UPDATE_GOLDEN") == "1"


def test_chart_scenarios_cover_the_documented_cases() -> None:
    assert set(SCENARIOS) >= {
        "default",
        "cluster-wide",
        "namespaces",
        "quickstart",
        "monitoring",
        "no-crds",
        "ha",
    }


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_chart_lints_strictly_with_each_scenario(helm: Path, scenario: str) -> None:
    result = subprocess.run(
        [str(helm), "lint", "--strict", str(CHART), "-f", str(values_file(scenario))],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_chart_renders_each_scenario_as_its_golden_file(helm: Path, scenario: str) -> None:
    rendered = render(helm, "-f", str(values_file(scenario)))
    golden = GOLDEN / f"{scenario}.yaml"

    if UPDATE_GOLDEN:
        golden.write_text(rendered)
    assert golden.exists(), f"no golden file {golden}; run with KSTEP_UPDATE_GOLDEN=1"
    assert rendered == golden.read_text(), (
        f"the rendering of ci/{scenario}-values.yaml differs from {golden.name}; if the change "
        "is intended, regenerate with KSTEP_UPDATE_GOLDEN=1"
    )


def test_chart_schema_rejects_a_misspelt_value(helm: Path) -> None:
    result = helm_template(helm, "--set", "operator.replica=2")

    assert result.returncode != 0
    assert "additional properties 'replica' not allowed" in result.stderr


def test_chart_schema_rejects_a_value_of_the_wrong_type(helm: Path) -> None:
    result = helm_template(helm, "--set", "crds.install=maybe")

    assert result.returncode != 0
    assert "at '/crds/install': got string, want boolean" in result.stderr


def test_chart_refuses_replicas_without_leader_election(helm: Path) -> None:
    result = helm_template(
        helm, "--set", "operator.replicas=2", "--set", "operator.leaderElection.enabled=false"
    )

    assert result.returncode != 0
    assert "operator.replicas above 1 needs operator.leaderElection.enabled" in result.stderr


def test_chart_refuses_a_lease_shorter_than_two_renewals(helm: Path) -> None:
    result = helm_template(helm, "--set", "operator.leaderElection.renewSeconds=10")

    assert result.returncode != 0
    assert "leaseDurationSeconds must be at least twice renewSeconds" in result.stderr


def test_chart_crds_are_the_generated_ones() -> None:
    for generated in sorted((ROOT / "crds").glob("*.yaml")):
        copy = CHART / "files" / "crds" / generated.name
        assert copy.exists(), f"the chart lacks {generated.name}; copy crds/ to {copy.parent}"
        assert copy.read_text() == generated.read_text(), (
            f"{copy} differs from crds/{generated.name}; copy crds/ to {copy.parent}"
        )


def test_chart_renders_the_crds_unchanged_but_kept(helm: Path) -> None:
    objects = documents(render(helm))

    for generated in sorted((ROOT / "crds").glob("*.yaml")):
        expected = yaml.safe_load(generated.read_text())
        rendered = find(objects, "CustomResourceDefinition", expected["metadata"]["name"])
        assert rendered["spec"] == expected["spec"]
        assert rendered["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_chart_leaves_the_crds_out_when_told(helm: Path) -> None:
    kinds = {o["kind"] for o in documents(render(helm, "--set", "crds.install=false"))}

    assert "CustomResourceDefinition" not in kinds


def test_chart_drops_the_keep_policy_when_told(helm: Path) -> None:
    objects = documents(render(helm, "--set", "crds.keep=false"))

    for crd in (o for o in objects if o["kind"] == "CustomResourceDefinition"):
        assert "helm.sh/resource-policy" not in (crd["metadata"].get("annotations") or {})


def test_chart_gives_the_token_to_the_operator_container_only(helm: Path) -> None:
    deployment = find(documents(render(helm)), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}

    assert pod["automountServiceAccountToken"] is False
    token_volumes = {
        v["name"]
        for v in pod["volumes"]
        if any("serviceAccountToken" in s for s in (v.get("projected") or {}).get("sources", []))
    }
    assert token_volumes == {"kube-api-access"}
    mounts = {name: {m["name"] for m in c["volumeMounts"]} for name, c in containers.items()}
    assert "kube-api-access" in mounts["operator"]
    assert "kube-api-access" not in mounts["executor"]
    assert containers["executor"]["command"][:4] == [
        "kstep-operator",
        "executor",
        "--socket",
        "/run/kstep/executor.sock",
    ]
    env = {e["name"]: e.get("value") for e in containers["operator"]["env"]}
    assert env["KSTEP_OPERATOR_EXECUTOR_SOCKET"] == "/run/kstep/executor.sock"
    assert "envFrom" not in containers["executor"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_chart_pods_run_unprivileged_in_each_scenario(helm: Path, scenario: str) -> None:
    objects = documents(render(helm, "-f", str(values_file(scenario))))

    for workload in (o for o in objects if o["kind"] in ("Deployment", "Job")):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            if workload["metadata"]["name"].endswith(("-operator", "-bucket")):
                assert context["readOnlyRootFilesystem"] is True
                assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}


def test_chart_step_service_account_has_no_token_and_no_binding(helm: Path) -> None:
    objects = documents(render(helm, "-f", str(values_file("namespaces"))))

    accounts = [o for o in objects if o["kind"] == "ServiceAccount"]
    steps = [a for a in accounts if a["metadata"]["name"] == "ml-steps"]
    assert {a["metadata"]["namespace"] for a in steps} == {"ml-team", "ml-batch"}
    assert all(a["automountServiceAccountToken"] is False for a in steps)
    subjects = [
        s["name"] for o in objects if o["kind"].endswith("RoleBinding") for s in o["subjects"]
    ]
    assert "ml-steps" not in subjects


def test_chart_rbac_is_namespaced_by_default_and_reads_secrets_by_name(helm: Path) -> None:
    objects = documents(render(helm, "-f", str(values_file("namespaces"))))

    assert not [o for o in objects if o["kind"].startswith("Cluster")]
    roles = [
        o for o in objects if o["kind"] == "Role" and o["metadata"]["name"] == "kstep-operator"
    ]
    assert {r["metadata"]["namespace"] for r in roles} == {"ml-team", "ml-batch"}
    for role in roles:
        secrets = [r for r in role["rules"] if "secrets" in r["resources"]]
        assert secrets == [
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": ["ml-stores"],
                "verbs": ["get"],
            }
        ]
        assert not any("*" in r["verbs"] or "*" in r["resources"] for r in role["rules"])


def test_chart_rbac_is_a_cluster_role_when_cluster_wide(helm: Path) -> None:
    objects = documents(render(helm, "-f", str(values_file("cluster-wide"))))

    role = find(objects, "ClusterRole", "kstep-operator")
    secrets = next(r for r in role["rules"] if "secrets" in r["resources"])
    assert secrets["resourceNames"] == ["kstep-stores", "kstep-stores-gpu"]
    deployment = find(objects, "Deployment")
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["KSTEP_OPERATOR_NAMESPACES"] == "[]"


def test_chart_orchestrator_pods_may_only_follow_their_run(helm: Path) -> None:
    objects = documents(render(helm, "-f", str(values_file("namespaces"))))

    roles = [
        o for o in objects if o["kind"] == "Role" and o["metadata"]["name"] == "kstep-orchestrator"
    ]
    assert {r["metadata"]["namespace"] for r in roles} == {"ml-team", "ml-batch"}
    resources = {res for rule in roles[0]["rules"] for res in rule["resources"]}
    assert resources == {"pipelineruns", "stepruns", "stepruns/status", "events"}
    run_rule = next(r for r in roles[0]["rules"] if r["resources"] == ["pipelineruns"])
    assert run_rule["verbs"] == ["get", "list", "watch"]
    deployment = find(objects, "Deployment")
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["KSTEP_OPERATOR_ORCHESTRATOR_SERVICE_ACCOUNT"] == "kstep-orchestrator"


def test_chart_selectors_leave_out_the_version_and_match_the_pods(helm: Path) -> None:
    objects = documents(render(helm, "-f", str(values_file("ha"))))

    deployment = find(objects, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert "app.kubernetes.io/version" not in selector
    assert "helm.sh/chart" not in selector
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    assert find(objects, "Service")["spec"]["selector"] == selector
    assert find(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector


def test_chart_cuts_names_at_63_characters(helm: Path) -> None:
    # Helm's limit for release names is 53 characters.
    release = "a-release-name-long-enough-to-push-names-over-the-63"
    objects = documents(render(helm, release=release))

    for obj in objects:
        if obj["kind"] != "CustomResourceDefinition":
            name = obj["metadata"]["name"]
            assert len(name) <= 63 and not name.endswith("-"), name
        for value in (obj["metadata"].get("labels") or {}).values():
            assert len(value) <= 63, value


def test_chart_helpers_are_namespaced_with_the_chart_name() -> None:
    defines = re.findall(
        r'define "([^"]+)"',
        "".join(p.read_text() for p in (CHART / "templates").rglob("*.tpl"))
        + "".join(p.read_text() for p in (CHART / "templates").rglob("*.yaml")),
    )

    assert defines
    assert all(name.startswith("kstep.") for name in defines), defines


def test_chart_values_are_all_documented() -> None:
    undocumented = _undocumented_values((CHART / "values.yaml").read_text().splitlines())

    assert undocumented == [], f"values without a `# --` comment: {undocumented}"


def test_chart_schema_forbids_unknown_keys_in_every_section() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())

    _assert_closed(schema, defaults, "")


def test_chart_dashboard_is_valid_json_with_prometheus_queries() -> None:
    dashboard = json.loads((CHART / "files" / "dashboards" / "kstep.json").read_text())

    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(queries) >= 15
    assert all("kstep_" in query for query in queries)
    assert dashboard["uid"] == "kstep-operator"


def test_chart_dashboard_config_map_is_labelled_for_the_grafana_sidecar(helm: Path) -> None:
    objects = documents(render(helm, "-f", str(values_file("monitoring"))))

    config_map = find(objects, "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "monitoring"
    json.loads(config_map["data"]["kstep.json"])


# ------------------------------------------------------------------ helpers


def _undocumented_values(lines: list[str]) -> list[str]:
    """Keys that neither carry a `# --` comment nor sit under a key that does."""
    undocumented: list[str] = []
    path: list[tuple[int, str]] = []
    documented_at: int | None = None
    comment: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped)
            continue
        match = re.match(r"^(\s*)([A-Za-z_][\w.-]*):(.*)$", line)
        if not match:
            comment = []
            continue
        indent, key, rest = len(match.group(1)), match.group(2), match.group(3).strip()
        while path and path[-1][0] >= indent:
            path.pop()
        if documented_at is not None and indent <= documented_at:
            documented_at = None
        has_doc = any(c.startswith("# --") for c in comment)
        comment = []
        path.append((indent, key))
        if documented_at is not None:
            continue
        if has_doc:
            documented_at = indent
        elif rest not in ("", "|", ">"):
            undocumented.append(".".join(k for _, k in path))
    return undocumented


def _assert_closed(schema: dict[str, Any], defaults: Any, where: str) -> None:
    if schema.get("type") != "object" or "properties" not in schema:
        return
    assert schema.get("additionalProperties") is False, f"{where or 'values'} is open"
    if isinstance(defaults, dict):
        missing = set(defaults) - set(schema["properties"])
        assert not missing, f"{where or 'values'}: no schema for {sorted(missing)}"
    for key, child in schema["properties"].items():
        value = defaults.get(key) if isinstance(defaults, dict) else None
        if isinstance(value, dict) and value and child.get("properties"):
            _assert_closed(child, value, f"{where}.{key}".lstrip("."))

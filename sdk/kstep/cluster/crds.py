"""Generating the CRDs in `crds/` from the spec models.

`python -m kstep.cluster.crds [DIR]` writes `pipelineruns.kstep.dev.yaml` and
`stepruns.kstep.dev.yaml`; `--check` exits 1 if the files on disk differ from what the models
generate. The pydantic JSON schemas are turned into Kubernetes structural schemas: references
inlined, optional fields as `nullable`, free-form values marked to keep unknown fields, and
CEL rules added where a rule spans fields.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from typing import Any

import yaml
from pydantic import BaseModel

from kstep.cluster import specs

CATEGORY = "kstep"

# CEL rules, kept cheap: nothing iterates over lists that can hold thousands of items.
# `param` is free-form, which CEL cannot see; the operator checks it against the others.
_INPUT_RULES = [
    {
        "rule": "!(has(self.output) && has(self.artifact))",
        "message": "an input is one of param, output or artifact (or a list of them)",
    },
    {
        "rule": "!has(self.item) || has(self.output) || has(self.artifact)",
        "message": "item selects an element of an output or artifact only",
    },
]
_LIST_INPUT_RULE = {
    "rule": "!has(self.list) || !(has(self.output) || has(self.artifact))",
    "message": "a list input holds its items under list and nothing else",
}
_RUN_SPEC_RULES = [
    {
        "rule": "self.mode == 'dynamic' ? has(self.entrypoint) : size(self.steps) > 0",
        "message": "a static run needs steps; a dynamic run needs an entrypoint",
    },
    {
        "rule": "!has(oldSelf.status) || has(self.status)",
        "message": "a cancelled run cannot be un-cancelled",
        "optionalOldSelf": True,
    },
]


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The Kubernetes structural OpenAPI schema of a spec model."""
    schema = model.model_json_schema(by_alias=True, mode="serialization")
    definitions = schema.pop("$defs", {})
    return _convert(schema, definitions)


def _convert(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    node = copy.deepcopy(node)
    if "$ref" in node:
        target = definitions[node.pop("$ref").split("/")[-1]]
        merged = _convert(target, definitions)
        if "description" in node:
            merged["description"] = node["description"]
        return merged
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"unions are not structural: {options}")
        result = _convert(options[0], definitions)
        for key in ("description", "default"):
            if node.get(key) is not None:
                result[key] = node[key]
        result["nullable"] = True
        return result
    nullable = False
    result = {}
    for key, value in node.items():
        if key in ("title", "x-kubernetes-preserve-unknown-fields"):
            continue
        if key == "default" and value is None:
            continue
        if key == "properties":
            result["properties"] = {
                name: _convert(child, definitions) for name, child in value.items()
            }
        elif key == "additionalProperties":
            # `false` (unknown fields forbidden) is how structural schemas behave anyway:
            # the API server prunes or, under strict field validation, rejects them.
            if isinstance(value, dict):
                result["additionalProperties"] = _convert(value, definitions)
        elif key == "items":
            result["items"] = _convert(value, definitions)
        elif key == "exclusiveMinimum":
            result["minimum"] = value
            result["exclusiveMinimum"] = True
        elif key == "const":
            result["enum"] = [value]
        else:
            result[key] = value
    if node.get("x-kubernetes-preserve-unknown-fields") or (
        "type" not in result and "properties" not in result and "enum" not in result
    ):
        result = {
            k: v for k, v in result.items() if k in ("description", "x-kubernetes-validations")
        }
        result["x-kubernetes-preserve-unknown-fields"] = True
        nullable = True
    if nullable:
        result["nullable"] = True
    return result


def _add_rules(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]
    spec["x-kubernetes-validations"] = _RUN_SPEC_RULES if "steps" in spec["properties"] else []
    if not spec["x-kubernetes-validations"]:
        del spec["x-kubernetes-validations"]

    def visit(node: dict[str, Any]) -> None:
        properties = node.get("properties", {})
        if {"param", "output", "artifact", "item"} <= set(properties):
            rules = list(_INPUT_RULES)
            if "list" in properties:
                rules.append(_LIST_INPUT_RULE)
            node["x-kubernetes-validations"] = rules
        for child in properties.values():
            visit(child)
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                visit(node[key])

    visit(spec)


def _crd(
    kind: str,
    plural: str,
    short_name: str,
    spec_model: type[BaseModel],
    status_model: type[BaseModel],
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": structural_schema(spec_model),
            "status": structural_schema(status_model),
        },
    }
    _add_rules(schema)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{specs.GROUP}",
            "labels": {"app.kubernetes.io/part-of": "kstep"},
        },
        "spec": {
            "group": specs.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short_name],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": specs.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


_SUCCEEDED_REASON = '.status.conditions[?(@.type=="Succeeded")].reason'


def render() -> dict[str, str]:
    """File name -> YAML text of every CRD."""
    pipeline_runs = _crd(
        "PipelineRun",
        "pipelineruns",
        "pr",
        specs.PipelineRunSpec,
        specs.PipelineRunStatus,
        [
            {"name": "Pipeline", "type": "string", "jsonPath": ".spec.pipelineName"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Reason", "type": "string", "jsonPath": _SUCCEEDED_REASON},
            {"name": "Done", "type": "integer", "jsonPath": ".status.stepCounts.completed"},
            {"name": "Failed", "type": "integer", "jsonPath": ".status.stepCounts.failed"},
            {"name": "Start", "type": "date", "jsonPath": ".status.startTime"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )
    step_runs = _crd(
        "StepRun",
        "stepruns",
        "sr",
        specs.StepRunSpec,
        specs.StepRunStatus,
        [
            {"name": "Run", "type": "string", "jsonPath": ".spec.pipelineRun"},
            {"name": "Step", "type": "string", "jsonPath": ".spec.invocationId"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Attempts", "type": "integer", "jsonPath": ".status.attempts"},
            {"name": "Reason", "type": "string", "jsonPath": _SUCCEEDED_REASON},
            {"name": "Start", "type": "date", "jsonPath": ".status.startTime"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )
    header = (
        "# Generated from kstep.cluster.specs by `python -m kstep.cluster.crds`; do not edit.\n"
    )
    return {
        f"pipelineruns.{specs.GROUP}.yaml": header + yaml.safe_dump(pipeline_runs, sort_keys=False),
        f"stepruns.{specs.GROUP}.yaml": header + yaml.safe_dump(step_runs, sort_keys=False),
    }


def main(argv: list[str] | None = None) -> int:
    """Write the CRDs, or with --check report whether the files are up to date."""
    parser = argparse.ArgumentParser(prog="python -m kstep.cluster.crds")
    parser.add_argument("directory", nargs="?", default="crds")
    parser.add_argument("--check", action="store_true", help="fail if the files are stale")
    args = parser.parse_args(argv)

    stale = []
    for name, text in render().items():
        path = os.path.join(args.directory, name)
        current = None
        if os.path.exists(path):
            with open(path, encoding="utf-8") as file:
                current = file.read()
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            os.makedirs(args.directory, exist_ok=True)
            with open(path, "w", encoding="utf-8") as file:
                file.write(text)
    if args.check and stale:
        print(
            f"CRDs out of date: {', '.join(stale)}; run python -m kstep.cluster.crds",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A pod's volumes, written as per-pod host directories that the stand-in bind-mounts.

Supported: ``emptyDir``, ``configMap``, ``secret``, ``downwardAPI``, ``projected`` (with
``serviceAccountToken``, ``configMap``, ``secret`` and ``downwardAPI`` sources) and ``hostPath``.
Contents are written once when the pod starts: later changes to a ConfigMap or Secret are not
propagated, and projected tokens are not refreshed (they are valid for about an hour).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.pod_environment import (
    ContainerConfigError,
    Lookup,
    field_value,
    read_source,
    resource_value,
)

logger = logging.getLogger(__name__)

Json = dict[str, Any]

# Obtains a token for the pod's ServiceAccount: (audience or None, expiration seconds) -> token.
TokenIssuer = Callable[[str | None, int], str]


@dataclass
class PodVolumes:
    """Host directories of a pod's volumes, and which volumes carry an API token."""

    host_paths: dict[str, Path] = field(default_factory=dict)
    token_volumes: dict[str, str] = field(default_factory=dict)

    def token_for(self, container: Json) -> str | None:
        """Return the API token mounted into ``container``, if any."""
        for mount in container.get("volumeMounts") or []:
            if mount["name"] in self.token_volumes:
                return self.token_volumes[mount["name"]]
        return None


def _write(directory: Path, relative: str, content: str) -> None:
    target = (directory / relative).resolve()
    if directory.resolve() not in target.parents:
        raise ContainerConfigError(f"volume item path escapes the volume: {relative!r}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content)


def _write_keys(
    directory: Path,
    values: dict[str, str] | None,
    source: Json,
    label: str,
    name: str,
) -> None:
    if values is None:
        if source.get("optional"):
            return
        raise ContainerConfigError(f'{label} "{name}" not found')
    items = source.get("items")
    if not items:
        for key, value in values.items():
            _write(directory, key, value)
        return
    for item in items:
        if item["key"] not in values:
            if source.get("optional"):
                continue
            raise ContainerConfigError(f"couldn't find key {item['key']} in {label} {name}")
        _write(directory, item["path"], values[item["key"]])


def _write_downward_api(
    directory: Path, pod: Json, items: list[Json], node_allocatable: dict[str, str]
) -> None:
    for item in items:
        if "fieldRef" in item:
            value = field_value(pod, item["fieldRef"]["fieldPath"])
        else:
            reference = item["resourceFieldRef"]
            value = resource_value(
                pod, reference.get("containerName", ""), reference, node_allocatable
            )
        _write(directory, item["path"], value)


def materialize_volumes(
    pod: Json,
    root: Path,
    *,
    lookup: Lookup,
    issue_token: TokenIssuer,
    node_allocatable: dict[str, str],
) -> PodVolumes:
    """Write the pod's volumes under ``root`` and return where each one is.

    Raises:
        ContainerConfigError: a referenced object is missing, or the volume type is not one
            the stand-in supports (the message names it).
    """
    namespace = pod["metadata"]["namespace"]
    volumes = PodVolumes()
    for volume in pod["spec"].get("volumes") or []:
        name = volume["name"]
        directory = root / name
        directory.mkdir(parents=True, exist_ok=True)
        volumes.host_paths[name] = directory

        if "emptyDir" in volume:
            continue
        if "hostPath" in volume:
            volumes.host_paths[name] = Path(volume["hostPath"]["path"])
            continue
        if "configMap" in volume:
            source = volume["configMap"]
            values = read_source(lookup, "configmaps", namespace, source["name"])
            _write_keys(directory, values, source, "configmap", source["name"])
            continue
        if "secret" in volume:
            source = volume["secret"]
            values = read_source(lookup, "secrets", namespace, source["secretName"])
            _write_keys(directory, values, source, "secret", source["secretName"])
            continue
        if "downwardAPI" in volume:
            items = volume["downwardAPI"].get("items") or []
            _write_downward_api(directory, pod, items, node_allocatable)
            continue
        if "projected" in volume:
            for source in volume["projected"].get("sources") or []:
                if "serviceAccountToken" in source:
                    request = source["serviceAccountToken"]
                    token = issue_token(
                        request.get("audience"), int(request.get("expirationSeconds", 3600))
                    )
                    _write(directory, request["path"], token)
                    volumes.token_volumes[name] = token
                elif "configMap" in source:
                    ref = source["configMap"]
                    values = read_source(lookup, "configmaps", namespace, ref["name"])
                    _write_keys(directory, values, ref, "configmap", ref["name"])
                elif "secret" in source:
                    ref = source["secret"]
                    values = read_source(lookup, "secrets", namespace, ref["name"])
                    _write_keys(directory, values, ref, "secret", ref["name"])
                elif "downwardAPI" in source:
                    items = source["downwardAPI"].get("items") or []
                    _write_downward_api(directory, pod, items, node_allocatable)
                else:
                    raise ContainerConfigError(
                        f"volume {name!r}: the kubelet stand-in does not support projected "
                        f"sources of kind {sorted(source)}"
                    )
            continue
        kinds = sorted(key for key in volume if key != "name")
        raise ContainerConfigError(
            f"volume {name!r}: the kubelet stand-in does not support volumes of kind {kinds}"
        )
    return volumes

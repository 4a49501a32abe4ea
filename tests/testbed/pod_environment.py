"""The environment of a pod's container, computed as the kubelet computes it.

Sources, later ones overriding earlier ones: ``envFrom`` (Secrets and ConfigMaps, with an
optional prefix), then ``env`` in declaration order (literal values with ``$(VAR)`` references
expanded, ``secretKeyRef``, ``configMapKeyRef``, ``fieldRef`` and ``resourceFieldRef``), then the
API server's service variables (``KUBERNETES_SERVICE_HOST`` ...) for names not set already.
"""

from __future__ import annotations

import base64
import logging
import math
import re
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any

logger = logging.getLogger(__name__)

Json = dict[str, Any]

# Reads a Secret or ConfigMap: (resource plural, namespace, name) -> object, or None if absent.
Lookup = Callable[[str, str, str], Json | None]

POD_IP = "127.0.0.1"
HOST_IP = "127.0.0.1"


class ContainerConfigError(RuntimeError):
    """A container's configuration cannot be resolved yet (the kubelet's
    ``CreateContainerConfigError``), e.g. a referenced Secret does not exist."""


# ---------------------------------------------------------------------- $(VAR) expansion


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Expand ``$(NAME)`` references the way Kubernetes does for env values, command and args.

    ``$$`` is an escaped ``$``; a reference to an undefined name is left as written.
    """
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            following = text[cursor + 1]
            if following == "$":
                out.append("$")
                advance = 1
            elif following == "(":
                end = text.find(")", cursor + 2)
                if end == -1:
                    out.append("$(")
                    advance = 1
                else:
                    name = text[cursor + 2 : end]
                    out.append(variables.get(name, f"$({name})"))
                    advance = end - cursor
            else:
                out.append("$" + following)
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


# ---------------------------------------------------------------------- quantities

_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))([eE][+-]?\d+|[numkMGTPE]|[KMGTPE]i)?$")
_SUFFIXES = {
    None: Fraction(1),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}


def parse_quantity(text: str | int | float) -> Fraction:
    """Parse a Kubernetes resource quantity such as ``500m``, ``2Gi`` or ``1e3``."""
    match = _QUANTITY.match(str(text).strip())
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    number, suffix = match.groups()
    if suffix and suffix[0] in "eE":
        return Fraction(number) * Fraction(10) ** int(suffix[1:])
    return Fraction(number) * _SUFFIXES[suffix]


# ---------------------------------------------------------------------- downward API

_LABEL_OR_ANNOTATION = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def field_value(pod: Json, field_path: str) -> str:
    """Return the value of a ``fieldRef`` for this pod running on the stand-in's node."""
    metadata, spec = pod.get("metadata", {}), pod.get("spec", {})
    match = _LABEL_OR_ANNOTATION.match(field_path)
    if match:
        return str((metadata.get(match.group(1)) or {}).get(match.group(2), ""))
    simple = {
        "metadata.name": metadata.get("name", ""),
        "metadata.namespace": metadata.get("namespace", ""),
        "metadata.uid": metadata.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": HOST_IP,
        "status.hostIPs": HOST_IP,
        "status.podIP": POD_IP,
        "status.podIPs": POD_IP,
    }
    if field_path in simple:
        return str(simple[field_path])
    if field_path in ("metadata.labels", "metadata.annotations"):
        items = metadata.get(field_path.split(".")[1]) or {}
        return "\n".join(f'{key}="{value}"' for key, value in sorted(items.items()))
    raise ContainerConfigError(f"unsupported fieldRef fieldPath {field_path!r}")


def resource_value(
    pod: Json, container_name: str, reference: Json, node_allocatable: Mapping[str, str]
) -> str:
    """Return the value of a ``resourceFieldRef``: a request or limit, in units of the divisor.

    An unset limit is the node's allocatable amount, as on a real node; an unset request is 0.
    """
    name = reference.get("containerName") or container_name
    containers = pod["spec"].get("initContainers", []) + pod["spec"]["containers"]
    container = next((c for c in containers if c["name"] == name), None)
    if container is None:
        raise ContainerConfigError(f"resourceFieldRef names no container of the pod: {name!r}")
    kind, _, resource = reference["resource"].partition(".")
    amounts = (container.get("resources") or {}).get(kind) or {}
    if resource in amounts:
        amount = parse_quantity(amounts[resource])
    elif kind == "limits" and resource in node_allocatable:
        amount = parse_quantity(node_allocatable[resource])
    else:
        amount = Fraction(0)
    divisor = parse_quantity(reference.get("divisor") or "1")
    if divisor <= 0:
        raise ContainerConfigError(f"resourceFieldRef divisor must be positive: {reference!r}")
    return str(math.ceil(amount / divisor))


# ---------------------------------------------------------------------- Secrets and ConfigMaps


def read_source(lookup: Lookup, kind: str, namespace: str, name: str) -> dict[str, str] | None:
    """Return the decoded key-value pairs of a Secret (``kind="secrets"``) or ConfigMap."""
    obj = lookup(kind, namespace, name)
    if obj is None:
        return None
    if kind == "secrets":
        return {
            key: base64.b64decode(value).decode("utf-8", "replace")
            for key, value in (obj.get("data") or {}).items()
        } | dict(obj.get("stringData") or {})
    binary = {
        key: base64.b64decode(value).decode("utf-8", "replace")
        for key, value in (obj.get("binaryData") or {}).items()
    }
    return dict(obj.get("data") or {}) | binary


def _key_ref(lookup: Lookup, namespace: str, kind: str, ref: Json) -> str | None:
    label = "Secret" if kind == "secrets" else "ConfigMap"
    values = read_source(lookup, kind, namespace, ref["name"])
    if values is None:
        if ref.get("optional"):
            return None
        raise ContainerConfigError(f'{label.lower()} "{ref["name"]}" not found')
    if ref["key"] not in values:
        if ref.get("optional"):
            return None
        raise ContainerConfigError(
            f"couldn't find key {ref['key']} in {label} {namespace}/{ref['name']}"
        )
    return values[ref["key"]]


def container_environment(
    pod: Json,
    container: Json,
    *,
    lookup: Lookup,
    service_env: Mapping[str, str],
    node_allocatable: Mapping[str, str],
) -> dict[str, str]:
    """Return the variables Kubernetes would give ``container`` (not the image's own)."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = {}

    for source in container.get("envFrom") or []:
        kind, ref = (
            ("secrets", source["secretRef"])
            if "secretRef" in source
            else ("configmaps", source["configMapRef"])
        )
        values = read_source(lookup, kind, namespace, ref["name"])
        if values is None:
            if ref.get("optional"):
                continue
            label = "secret" if kind == "secrets" else "configmap"
            raise ContainerConfigError(f'{label} "{ref["name"]}" not found')
        prefix = source.get("prefix", "")
        env.update({prefix + key: value for key, value in values.items() if "=" not in key})

    for variable in container.get("env") or []:
        name, source = variable["name"], variable.get("valueFrom")
        value: str | None
        if source is None:
            value = expand(variable.get("value", ""), {**service_env, **env})
        elif "secretKeyRef" in source:
            value = _key_ref(lookup, namespace, "secrets", source["secretKeyRef"])
        elif "configMapKeyRef" in source:
            value = _key_ref(lookup, namespace, "configmaps", source["configMapKeyRef"])
        elif "fieldRef" in source:
            value = field_value(pod, source["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in source:
            value = resource_value(
                pod, container["name"], source["resourceFieldRef"], node_allocatable
            )
        else:
            raise ContainerConfigError(f"unsupported valueFrom of {name}: {sorted(source)}")
        if value is not None:
            env[name] = value

    return {**service_env, **env}

"""Kubeconfig files for the test bed's users, service accounts and pods."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import yaml

logger = logging.getLogger(__name__)


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_pem: bytes | None,
    user: str,
    token: str,
    namespace: str = "default",
    cluster: str = "kstep-testbed",
) -> Path:
    """Write a one-context kubeconfig that authenticates with a bearer token.

    The CA is embedded so that the file keeps working when copied elsewhere; without a CA the
    server's certificate is not verified, as with an existing cluster configured that way.
    """
    cluster_entry: dict[str, object] = {"server": server}
    if ca_pem is not None:
        cluster_entry["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    else:
        cluster_entry["insecure-skip-tls-verify"] = True
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": cluster_entry}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {
                "name": f"{user}@{cluster}",
                "context": {"cluster": cluster, "user": user, "namespace": namespace},
            }
        ],
        "current-context": f"{user}@{cluster}",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path

"""Reaching the Kubernetes API server: clients from a kubeconfig, and its errors as ours.

Only this module and the ones that talk to a cluster import `kubernetes`, and only when a
function runs, never when `kstep` is imported.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from kstep._errors import ClusterError

logger = logging.getLogger(__name__)

_SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
_MESSAGE_LIMIT = 8192


def connect(
    kubeconfig: str | os.PathLike[str] | None = None, context: str | None = None
) -> tuple[Any, str]:
    """An API client and the namespace to use when none is given.

    The client comes from `kubeconfig` (default: `$KUBECONFIG`, else `~/.kube/config`) and
    `context` (default: its current context); with no kubeconfig at all, from the service
    account of the pod this runs in. The namespace is the context's, else `default`.

    Raises:
        ClusterError: no usable kubeconfig, context or in-cluster service account.
    """
    import kubernetes.config
    from kubernetes import client
    from kubernetes.config.config_exception import ConfigException
    from kubernetes.config.kube_config import KUBE_CONFIG_DEFAULT_LOCATION

    config_file = os.fspath(kubeconfig) if kubeconfig is not None else None
    default_exists = any(
        os.path.exists(os.path.expanduser(path))
        for path in KUBE_CONFIG_DEFAULT_LOCATION.split(os.pathsep)
    )
    # The loaders are untyped; going through Any keeps mypy --strict on the calls around them.
    config: Any = kubernetes.config
    if config_file is None and not default_exists and os.path.exists(_SERVICE_ACCOUNT_NAMESPACE):
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except ConfigException as error:
            raise ClusterError(f"cannot use this pod's service account: {error}") from None
        with open(_SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as file:
            namespace = file.read().strip() or "default"
        return client.ApiClient(configuration), namespace

    where = config_file or KUBE_CONFIG_DEFAULT_LOCATION
    try:
        api_client = config.new_client_from_config(
            config_file=config_file, context=context, persist_config=False
        )
        contexts, current = config.list_kube_config_contexts(config_file)
    except (ConfigException, OSError) as error:
        raise ClusterError(
            f"cannot load the kubeconfig {where} (context {context or 'current'}): {error}"
        ) from None
    throttle_token_checks(api_client.configuration)
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else current
    namespace = ((chosen or {}).get("context") or {}).get("namespace") or "default"
    logger.debug("Connected through %s, context %s.", where, (chosen or {}).get("name"))
    return api_client, namespace


# How often a kubeconfig client checks whether its token needs refreshing.
_TOKEN_CHECK_SECONDS = 10.0


def throttle_token_checks(configuration: Any) -> None:
    """Have a client from a kubeconfig check its token at most every `_TOKEN_CHECK_SECONDS`.

    The kubeconfig loader hooks a check before every request that also copies all of its
    settings into the client again: a millisecond of CPU per request. Tokens are refreshed
    five minutes before they expire, so a check every few seconds still refreshes in time.
    """
    import time

    hook = getattr(configuration, "refresh_api_key_hook", None)
    if hook is None:
        return
    state: dict[str, Any] = {"check": hook, "last": float("-inf")}

    def throttled(client_configuration: Any) -> None:
        now = time.monotonic()
        if now - state["last"] < _TOKEN_CHECK_SECONDS:
            return
        state["last"] = now
        state["check"](client_configuration)
        # A check installs a new hook of its own: it becomes the next check, behind this one.
        renewed = client_configuration.refresh_api_key_hook
        if renewed is not throttled:
            state["check"] = renewed
            client_configuration.refresh_api_key_hook = throttled

    configuration.refresh_api_key_hook = throttled


def api_error(error: Exception, action: str) -> ClusterError:
    """An API client exception as a `ClusterError` carrying the server's own message.

    Args:
        error: what the client raised (`ApiException`, or a connection error).
        action: what was attempted, naming the object, e.g. `creating PipelineRun ml/train-1`.
    """
    from kubernetes.client.exceptions import ApiException

    if not isinstance(error, ApiException):
        return ClusterError(f"{action} failed: the API server cannot be reached: {error}")
    status = int(error.status or 0) or None
    message, reason = str(error.reason or ""), ""
    try:
        body = json.loads(error.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict):
        message = str(body.get("message") or message)
        reason = str(body.get("reason") or "")
    elif error.body:
        message = str(error.body)
    if len(message) > _MESSAGE_LIMIT:
        message = message[:_MESSAGE_LIMIT] + "..."
    return ClusterError(
        f"{action} failed: {message} (HTTP {status}{', ' + reason if reason else ''})",
        status=status,
        reason=reason,
    )

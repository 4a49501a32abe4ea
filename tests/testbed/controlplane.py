"""A real Kubernetes control plane for tests: etcd, kube-apiserver, kube-controller-manager.

This follows controller-runtime's envtest: the real API server (so validation, defaulting, RBAC,
admission and watches behave exactly as in a cluster) on loopback, plus the real controller
manager, so Jobs create pods, owner references cascade, namespaces are finalized and service
accounts appear. There is no scheduler and no kubelet: ``kubelet_standin`` binds and runs pods.

Two identities are configured with a static token file: an admin in ``system:masters`` and an
unprivileged user with no role bindings at all, for testing RBAC.

``connect_existing`` gives the same ``ClusterAccess`` for a cluster that already runs (kind),
with a ServiceAccount in place of the unprivileged user.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import kubernetes

from testbed.certificates import CertificateAuthority, KeyPair, create_signing_key
from testbed.kubeconfigs import write_kubeconfig
from testbed.processes import ComponentError, ManagedProcess, free_port, wait_until

logger = logging.getLogger(__name__)

ADMIN_USER = "kstep-testbed-admin"
UNPRIVILEGED_USER = "kstep-testbed-user"

# The namespace and ServiceAccount that stand in for the unprivileged user on an existing cluster.
EXTERNAL_USER_NAMESPACE = "kstep-testbed"
EXTERNAL_USER_SERVICE_ACCOUNT = "kstep-testbed-unprivileged"

# Seconds to wait for each component; generous because a loaded 2-core CI machine is slow.
_START_TIMEOUT = 60.0


@dataclass
class ClusterAccess:
    """How tests reach the cluster: the test control plane or an existing cluster.

    Attributes:
        server: The API server URL.
        ca_path: PEM file of the CA that signed the API server's certificate, if known.
        admin_kubeconfig: Kubeconfig of a cluster admin.
        user_kubeconfig: Kubeconfig of an identity without any grants.
        admin_token: Bearer token of the admin (None when the kubeconfig uses client certs).
        user_token: Bearer token of the unprivileged identity.
        user_name: The unprivileged identity as RBAC subjects name it.
        run_dir: Where kubeconfigs, certificates and component logs of this session live.
        external: True when the cluster was not started by the test bed.
        logs: Log file of each component started by the test bed, by component name.
        timings: Seconds each start-up step took, by step name.
    """

    server: str
    ca_path: Path | None
    admin_kubeconfig: Path
    user_kubeconfig: Path
    admin_token: str | None
    user_token: str
    user_name: str
    run_dir: Path
    external: bool = False
    logs: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def kubeconfig(self, user: str = "admin") -> Path:
        """Return the kubeconfig of ``"admin"`` or of the unprivileged ``"user"``."""
        if user == "admin":
            return self.admin_kubeconfig
        if user == "user":
            return self.user_kubeconfig
        raise ValueError(f"user must be 'admin' or 'user', got {user!r}")

    def api_client(self, user: str = "admin") -> kubernetes.client.ApiClient:
        """Build a client of the official ``kubernetes`` package for ``"admin"`` or ``"user"``."""
        client = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(self.kubeconfig(user))
        )
        return cast(kubernetes.client.ApiClient, client)

    def token_client(self, token: str) -> kubernetes.client.ApiClient:
        """Build a client that authenticates with a bearer token (e.g. a ServiceAccount's)."""
        configuration = kubernetes.client.Configuration()
        configuration.host = self.server
        configuration.api_key = {"authorization": f"Bearer {token}"}
        if self.ca_path is not None:
            configuration.ssl_ca_cert = str(self.ca_path)
        else:
            configuration.verify_ssl = False
        return kubernetes.client.ApiClient(configuration)

    def kubectl(
        self, *args: str, user: str = "admin", check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the kubectl of the test environment as ``user`` and return its captured output."""
        kubectl = Path(sys.executable).parent / "kubectl"
        command = [str(kubectl) if kubectl.exists() else "kubectl", *args]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig(user))}
        result = subprocess.run(
            command, input=stdin, capture_output=True, text=True, env=env, timeout=120
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited with {result.returncode}:\n{result.stderr}"
            )
        return result


class ControlPlane:
    """etcd, kube-apiserver and kube-controller-manager, started from binaries in ``bin_dir``."""

    def __init__(self, bin_dir: Path, run_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.run_dir = run_dir
        self.processes: list[ManagedProcess] = []
        self.timings: dict[str, float] = {}
        self.ca: CertificateAuthority | None = None
        self.access: ClusterAccess | None = None

    def issue_serving_cert(self, name: str) -> KeyPair:
        """Sign a loopback serving certificate that the API server trusts (for kubelet ports)."""
        if self.ca is None:
            raise ComponentError("the control plane has not been started")
        return self.ca.issue_serving_cert(name)

    def start(self) -> ClusterAccess:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> ClusterAccess:
        began = time.monotonic()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        pki = self.run_dir / "pki"

        # Identities and keys are fresh per session, so nothing leaks between runs.
        self.ca = CertificateAuthority(pki)
        serving = self.ca.issue_serving_cert(
            "kube-apiserver",
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ips=("127.0.0.1", "10.0.0.1"),
        )
        service_accounts = create_signing_key(pki)
        admin_token, user_token = secrets.token_hex(16), secrets.token_hex(16)
        tokens = pki / "tokens.csv"
        tokens.write_text(
            f'{admin_token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n'
            f"{user_token},{UNPRIVILEGED_USER},{UNPRIVILEGED_USER}\n"
        )
        tokens.chmod(0o600)
        self._mark("certificates", began)

        etcd_url = self._start_etcd()
        server = self._start_apiserver(etcd_url, serving, service_accounts, tokens, admin_token)

        admin_kubeconfig = write_kubeconfig(
            self.run_dir / "kubeconfig-admin",
            server=server,
            ca_pem=self.ca.cert_pem,
            user=ADMIN_USER,
            token=admin_token,
        )
        user_kubeconfig = write_kubeconfig(
            self.run_dir / "kubeconfig-user",
            server=server,
            ca_pem=self.ca.cert_pem,
            user=UNPRIVILEGED_USER,
            token=user_token,
        )
        self._start_controller_manager(admin_kubeconfig, service_accounts, server, admin_token)
        self.timings["total"] = time.monotonic() - began

        self.access = ClusterAccess(
            server=server,
            ca_path=self.ca.cert_path,
            admin_kubeconfig=admin_kubeconfig,
            user_kubeconfig=user_kubeconfig,
            admin_token=admin_token,
            user_token=user_token,
            user_name=UNPRIVILEGED_USER,
            run_dir=self.run_dir,
            logs={process.name: process.log_path for process in self.processes},
            timings=self.timings,
        )
        logger.info(
            "Test control plane is ready at %s after %.1f s; logs are in %s",
            server,
            self.timings["total"],
            self.run_dir,
        )
        return self.access

    def stop(self) -> None:
        """Stop every component by its PID, newest first."""
        while self.processes:
            self.processes.pop().stop(grace=5.0)

    # ------------------------------------------------------------------ components

    def _mark(self, step: str, since: float) -> float:
        now = time.monotonic()
        self.timings[step] = now - since
        return now

    def _spawn(self, name: str, argv: list[str]) -> ManagedProcess:
        binary = self.bin_dir / argv[0]
        if not os.access(binary, os.X_OK):
            raise ComponentError(f"{name}: no executable {binary}; run hack/testbed-binaries.sh")
        process = ManagedProcess(
            name, [str(binary), *argv[1:]], log_path=self.run_dir / "logs" / f"{name}.log"
        )
        self.processes.append(process.start())
        return process

    def _start_etcd(self) -> str:
        began = time.monotonic()
        client, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
        etcd = self._spawn(
            "etcd",
            [
                "etcd",
                "--name=testbed",
                f"--data-dir={self.run_dir / 'etcd-data'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=testbed={peer}",
                # Durability is worthless for a throwaway store and fsync dominates its latency.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait_ready(etcd, lambda: _http_json(f"{client}/health").get("health") == "true")
        self._mark("etcd", began)
        return client

    def _start_apiserver(
        self,
        etcd_url: str,
        serving: KeyPair,
        service_accounts: KeyPair,
        tokens: Path,
        admin_token: str,
    ) -> str:
        began = time.monotonic()
        assert self.ca is not None
        port = free_port()
        server = f"https://127.0.0.1:{port}"
        apiserver = self._spawn(
            "kube-apiserver",
            [
                "kube-apiserver",
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--tls-cert-file={serving.cert_path}",
                f"--tls-private-key-file={serving.key_path}",
                f"--client-ca-file={self.ca.cert_path}",
                f"--token-auth-file={tokens}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={service_accounts.cert_path}",
                f"--service-account-signing-key-file={service_accounts.key_path}",
                "--service-cluster-ip-range=10.0.0.0/24",
                # Nothing serves the "kubernetes" Service's endpoints; pods reach 127.0.0.1.
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                # `kubectl logs` is proxied to the kubelet stand-in's port, whose serving
                # certificate this CA signs.
                f"--kubelet-certificate-authority={self.ca.cert_path}",
                "--kubelet-preferred-address-types=InternalIP",
                "--profiling=false",
                f"--cert-dir={self.run_dir / 'apiserver-certs'}",
            ],
        )
        context = ssl.create_default_context(cafile=str(self.ca.cert_path))
        self._wait_ready(
            apiserver,
            lambda: _http_text(f"{server}/readyz", token=admin_token, context=context) == "ok",
        )
        self._mark("kube-apiserver", began)
        return server

    def _start_controller_manager(
        self, kubeconfig: Path, service_accounts: KeyPair, server: str, admin_token: str
    ) -> None:
        began = time.monotonic()
        assert self.ca is not None
        manager = self._spawn(
            "kube-controller-manager",
            [
                "kube-controller-manager",
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--controllers=*",
                f"--service-account-private-key-file={service_accounts.key_path}",
                f"--root-ca-file={self.ca.cert_path}",
                "--use-service-account-credentials=false",
                "--secure-port=0",
                # The default client rate (20/s) would throttle benchmarks of many Jobs.
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                "--profiling=false",
            ],
        )

        # The default ServiceAccount appearing shows that the controllers run; pods cannot be
        # created in a namespace before its default ServiceAccount exists.
        context = ssl.create_default_context(cafile=str(self.ca.cert_path))
        url = f"{server}/api/v1/namespaces/default/serviceaccounts/default"
        self._wait_ready(
            manager, lambda: _http_json(url, token=admin_token, context=context).get("kind")
        )
        self._mark("kube-controller-manager", began)

    def _wait_ready(self, process: ManagedProcess, probe: Callable[[], object]) -> None:
        try:
            wait_until(
                probe,
                timeout=_START_TIMEOUT,
                what=f"{process.name} becoming ready",
                check=process.raise_if_exited,
            )
        except TimeoutError as exc:
            raise ComponentError(process.describe_failure(f"did not become ready: {exc}")) from exc


def _http_text(url: str, *, token: str | None = None, context: ssl.SSLContext | None = None) -> str:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5, context=context) as response:
        return str(response.read().decode())


def _http_json(
    url: str, *, token: str | None = None, context: ssl.SSLContext | None = None
) -> dict[str, object]:
    return dict(json.loads(_http_text(url, token=token, context=context)))


def connect_existing(kubeconfig: Path, run_dir: Path) -> ClusterAccess:
    """Describe an existing cluster, creating a ServiceAccount to act as the unprivileged user.

    The ServiceAccount gets no role bindings, so it holds only what every authenticated
    identity holds (discovery), like the control plane's unprivileged user.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig), client_configuration=configuration
    )
    ca_path: Path | None = None
    if configuration.ssl_ca_cert:
        ca_path = run_dir / "ca.crt"
        shutil.copyfile(configuration.ssl_ca_cert, ca_path)
    bearer = (configuration.api_key or {}).get("authorization", "")
    admin_token = bearer.removeprefix("Bearer ").strip() or None

    k8s = kubernetes.client
    with k8s.ApiClient(configuration) as client:
        core = k8s.CoreV1Api(client)
        _ensure(
            lambda: core.create_namespace(
                k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=EXTERNAL_USER_NAMESPACE))
            )
        )
        _ensure(
            lambda: core.create_namespaced_service_account(
                EXTERNAL_USER_NAMESPACE,
                k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=EXTERNAL_USER_SERVICE_ACCOUNT)),
            )
        )
        token_request = core.create_namespaced_service_account_token(
            EXTERNAL_USER_SERVICE_ACCOUNT,
            EXTERNAL_USER_NAMESPACE,
            k8s.AuthenticationV1TokenRequest(
                spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=4 * 3600)
            ),
        )
    user_token = token_request.status.token if token_request.status else None
    if not user_token:
        raise RuntimeError(
            f"the TokenRequest for {EXTERNAL_USER_SERVICE_ACCOUNT} returned no token"
        )
    user_kubeconfig = write_kubeconfig(
        run_dir / "kubeconfig-user",
        server=configuration.host,
        ca_pem=ca_path.read_bytes() if ca_path else None,
        user=EXTERNAL_USER_SERVICE_ACCOUNT,
        token=user_token,
    )
    return ClusterAccess(
        server=configuration.host,
        ca_path=ca_path,
        admin_kubeconfig=kubeconfig,
        user_kubeconfig=user_kubeconfig,
        admin_token=admin_token,
        user_token=user_token,
        user_name=(
            f"system:serviceaccount:{EXTERNAL_USER_NAMESPACE}:{EXTERNAL_USER_SERVICE_ACCOUNT}"
        ),
        run_dir=run_dir,
        external=True,
    )


def _ensure(create: Callable[[], object]) -> None:
    """Create an object, treating "already exists" as success."""
    try:
        create()
    except kubernetes.client.ApiException as exc:
        if exc.status != 409:
            raise

"""Leader election on a coordination.k8s.io/v1 Lease: one replica reconciles at a time.

The protocol is client-go's. The leader writes its identity and a renew time into the Lease
every `renew_seconds`; every write carries the `resourceVersion` it read, so of two replicas
that try at once only one succeeds. A standby takes the Lease over once it has seen the same
record, unchanged, for `leaseDurationSeconds` on its own monotonic clock: clocks of different
machines are never compared. A leader that cannot renew for `duration - renew_seconds` stops
leading, well before a standby may take over.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from kstep_operator.kube import LEASES, ApiError, Kube, now_iso
from kstep_operator.settings import OperatorSettings

logger = logging.getLogger(__name__)

_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

# How often a standby looks at the Lease, and a leader retries a failed renewal: often, so
# that a standby notices an expired Lease soon after it expires.
_RETRY_SECONDS = 1.0

OnLost = Callable[[str], None]


class LeaderElector:
    """Acquires, renews and releases one Lease for one identity."""

    def __init__(
        self,
        kube: Kube,
        *,
        name: str,
        namespace: str,
        identity: str,
        duration: float,
        renew_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < 2 * renew_seconds <= duration:
            raise ValueError(
                f"the Lease is renewed every {renew_seconds!r} s but lasts {duration!r} s; "
                "it must last at least twice the renew period"
            )
        self.kube = kube
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.duration = duration
        self.renew_seconds = renew_seconds
        self.retry_seconds = min(_RETRY_SECONDS, renew_seconds)
        self._clock = clock
        self._observed: dict[str, Any] | None = None
        self._observed_at = 0.0
        self._renewed_at: float | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, kube: Kube, settings: OperatorSettings) -> LeaderElector:
        """An elector configured by the operator's `lease_*` and `identity` settings."""
        return cls(
            kube,
            name=settings.lease_name,
            namespace=settings.lease_namespace or own_namespace(),
            identity=settings.identity or default_identity(),
            duration=settings.lease_duration_seconds,
            renew_seconds=settings.lease_renew_seconds,
        )

    @property
    def is_leader(self) -> bool:
        """Whether the last write of the Lease made this replica its holder, recently enough."""
        return self._renewed_at is not None and (
            self._clock() - self._renewed_at < self.renew_deadline
        )

    @property
    def renew_deadline(self) -> float:
        """How long a leader may go without renewing before it must stop leading."""
        return self.duration - self.renew_seconds

    # -------------------------------------------------------------- acquiring

    def acquire(self) -> bool:
        """Block until this replica holds the Lease (True) or `stop` is called (False)."""
        logger.info(
            "Waiting for the leader Lease %s/%s as %s.", self.namespace, self.name, self.identity
        )
        while not self._stopped.is_set():
            try:
                if self.try_acquire_or_renew():
                    logger.info("This replica (%s) now leads.", self.identity)
                    return True
            except ApiError as error:
                logger.warning("Reading or writing the leader Lease failed: %s", error)
            self._stopped.wait(self.retry_seconds)
        return False

    def try_acquire_or_renew(self) -> bool:
        """One attempt to take or renew the Lease; True if this replica holds it now."""
        now = self._clock()
        lease = self.kube.get(LEASES, self.namespace, self.name)
        if lease is None:
            return self._create(now)

        # Expiry is judged from when this replica saw the record change, not from the
        # renew time written in it by another machine's clock.
        spec = dict(lease.get("spec") or {})
        record = {k: spec.get(k) for k in ("holderIdentity", "renewTime", "leaseTransitions")}
        if record != self._observed:
            self._observed = record
            self._observed_at = now
        holder = spec.get("holderIdentity") or ""
        lasts = float(spec.get("leaseDurationSeconds") or self.duration)
        if holder and holder != self.identity and now < self._observed_at + lasts:
            return False

        stamp = now_iso()
        if holder == self.identity:
            spec.update(renewTime=stamp, leaseDurationSeconds=_seconds(self.duration))
        else:
            spec = {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": _seconds(self.duration),
                "acquireTime": stamp,
                "renewTime": stamp,
                "leaseTransitions": int(spec.get("leaseTransitions") or 0) + 1,
            }
        try:
            written = self.kube.replace(
                LEASES, self.namespace, self.name, {"metadata": lease["metadata"], "spec": spec}
            )
        except ApiError as error:
            if error.status == 409:
                # Another replica wrote the Lease since it was read: look again next time.
                return False
            raise
        self._held(written, now)
        return True

    def _create(self, now: float) -> bool:
        stamp = now_iso()
        body = {
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": _seconds(self.duration),
                "acquireTime": stamp,
                "renewTime": stamp,
                "leaseTransitions": 0,
            },
        }
        try:
            created = self.kube.create(LEASES, self.namespace, body)
        except ApiError as error:
            if error.status == 409:
                return False
            raise
        self._held(created, now)
        return True

    def _held(self, lease: dict[str, Any], now: float) -> None:
        spec = lease.get("spec") or {}
        self._observed = {
            k: spec.get(k) for k in ("holderIdentity", "renewTime", "leaseTransitions")
        }
        self._observed_at = now
        self._renewed_at = now

    # -------------------------------------------------------------- leading

    def keep_renewing(self, on_lost: OnLost) -> None:
        """Renew the Lease on a background thread; call `on_lost` once it is lost."""
        self._thread = threading.Thread(
            target=self._renew_forever, args=(on_lost,), name="kstep-leader", daemon=True
        )
        self._thread.start()

    def _renew_forever(self, on_lost: OnLost) -> None:
        while not self._stopped.wait(self.renew_seconds):
            why = self._renew_before_deadline()
            if why is not None and not self._stopped.is_set():
                self._renewed_at = None
                on_lost(why)
                return

    def _renew_before_deadline(self) -> str | None:
        """Renew, retrying until the deadline; None when renewed, else why the Lease is lost."""
        while not self._stopped.is_set():
            try:
                if self.try_acquire_or_renew():
                    return None
                holder = (self._observed or {}).get("holderIdentity")
                if holder and holder != self.identity:
                    return f"{holder} holds the Lease now"
            except ApiError as error:
                logger.warning("Renewing the leader Lease failed: %s", error)
            assert self._renewed_at is not None
            if self._clock() - self._renewed_at >= self.renew_deadline:
                return f"the Lease was not renewed for {self.renew_deadline:g} s"
            self._stopped.wait(self.retry_seconds)
        return None

    # -------------------------------------------------------------- stopping

    def stop(self) -> None:
        """Stop waiting for the Lease and stop renewing it."""
        self._stopped.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.renew_seconds + 5)

    def release(self) -> None:
        """Stop renewing and give the Lease up, so a standby need not wait for it to expire."""
        self.stop()
        if self._renewed_at is None:
            return
        self._renewed_at = None
        try:
            lease = self.kube.get(LEASES, self.namespace, self.name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            spec = dict(lease["spec"])
            spec.update(holderIdentity=None, leaseDurationSeconds=1, renewTime=now_iso())
            self.kube.replace(
                LEASES, self.namespace, self.name, {"metadata": lease["metadata"], "spec": spec}
            )
            logger.info("This replica (%s) released the leader Lease.", self.identity)
        except ApiError as error:
            logger.warning("Releasing the leader Lease failed (it expires instead): %s", error)


def own_namespace() -> str:
    """The namespace of this pod (from its service account), or `default` outside a pod."""
    try:
        with open(_NAMESPACE_FILE, encoding="utf-8") as file:
            return file.read().strip() or "default"
    except OSError:
        return "default"


def default_identity() -> str:
    """The host (pod) name plus a suffix per process, so that a restart is a new holder."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def exit_on_lost(why: str) -> None:
    """Exit the process at once, non-zero, so that its pod restarts it as a standby.

    Nothing may be reconciled after the Lease is lost, and a graceful stop would let
    in-flight reconciles run on while another replica leads.
    """
    logger.error("This replica lost the leader Lease (%s); it exits to restart as a standby.", why)
    logging.shutdown()
    os._exit(1)


def _seconds(value: float) -> int:
    # Rounded up: a standby must never wait less than the leader assumes.
    return max(1, math.ceil(value))

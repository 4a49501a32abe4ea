"""Leader election on a Lease, against an in-memory API with optimistic concurrency."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from kstep_operator.kube import LEASES, ApiError, Kind
from kstep_operator.leader import LeaderElector
from kstep_operator.settings import OperatorSettings


class FakeLeases:
    """The Lease part of `Kube`: get, create and replace with resourceVersion checks."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = 0
        self.failing = False
        # Called before each read; a test advances its clock here.
        self.before_get: Callable[[], None] = lambda: None
        # What every read returns instead of the stored object, to replay a stale read.
        self.stale: dict[str, Any] | None = None

    def _check(self, kind: Kind) -> None:
        assert kind is LEASES
        if self.failing:
            raise ApiError(503, "the API server is unavailable")

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        self.before_get()
        self._check(kind)
        found = self.stale or self.objects.get((namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def create(self, kind: Kind, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self._check(kind)
        key = (namespace, body["metadata"]["name"])
        if key in self.objects:
            raise ApiError(409, "already exists", "AlreadyExists")
        return self._store(key, body)

    def replace(
        self, kind: Kind, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        self._check(kind)
        current = self.objects[(namespace, name)]
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "the object has been modified", "Conflict")
        return self._store((namespace, name), body)

    def _store(self, key: tuple[str, str], body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.objects[key] = stored
        return copy.deepcopy(stored)

    def holder(self) -> str | None:
        holder: str | None = self.objects[("kstep", "kstep-operator")]["spec"].get("holderIdentity")
        return holder


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def elector(leases: FakeLeases, clock: FakeClock, identity: str, **kw: Any) -> LeaderElector:
    options: dict[str, Any] = {"duration": 15.0, "renew_seconds": 5.0} | kw
    return LeaderElector(
        leases,  # type: ignore[arg-type]
        name="kstep-operator",
        namespace="kstep",
        identity=identity,
        clock=clock,
        **options,
    )


def test_leader_elector_creates_the_lease_when_none_exists() -> None:
    leases, clock = FakeLeases(), FakeClock()

    assert elector(leases, clock, "a").try_acquire_or_renew()

    spec = leases.objects[("kstep", "kstep-operator")]["spec"]
    assert spec["holderIdentity"] == "a"
    assert spec["leaseDurationSeconds"] == 15
    assert spec["leaseTransitions"] == 0
    assert spec["renewTime"].endswith("Z")


def test_leader_elector_waits_while_the_holder_renews() -> None:
    leases, clock = FakeLeases(), FakeClock()
    leader, standby = elector(leases, clock, "a"), elector(leases, clock, "b")
    assert leader.try_acquire_or_renew()

    for _ in range(10):
        assert not standby.try_acquire_or_renew()
        clock.now += 5
        assert leader.try_acquire_or_renew()

    assert leases.holder() == "a"


def test_leader_elector_takes_over_when_the_holder_stopped_renewing() -> None:
    leases, clock = FakeLeases(), FakeClock()
    assert elector(leases, clock, "a").try_acquire_or_renew()
    standby = elector(leases, clock, "b")
    assert not standby.try_acquire_or_renew()

    clock.now += 14.9
    assert not standby.try_acquire_or_renew()
    clock.now += 0.1
    assert standby.try_acquire_or_renew()

    spec = leases.objects[("kstep", "kstep-operator")]["spec"]
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("b", 1)


def test_leader_elector_measures_expiry_from_when_it_saw_the_lease_change() -> None:
    leases, clock = FakeLeases(), FakeClock()
    assert elector(leases, clock, "a").try_acquire_or_renew()
    clock.now += 100

    # A standby that starts late still waits a full lease duration: the renew time written by
    # another machine's clock is never compared with its own.
    standby = elector(leases, clock, "b")
    assert not standby.try_acquire_or_renew()
    clock.now += 15
    assert standby.try_acquire_or_renew()


def test_leader_elector_loses_the_race_when_the_lease_changed_since_it_was_read() -> None:
    leases, clock = FakeLeases(), FakeClock()
    assert elector(leases, clock, "a").try_acquire_or_renew()
    b, c = elector(leases, clock, "b"), elector(leases, clock, "c")
    assert not b.try_acquire_or_renew()
    assert not c.try_acquire_or_renew()
    clock.now += 15

    # b and c both read the expired Lease; c writes first, so b's write is refused.
    read = leases.get(LEASES, "kstep", "kstep-operator")
    assert c.try_acquire_or_renew()
    leases.stale = read
    assert not b.try_acquire_or_renew()
    leases.stale = None

    assert leases.holder() == "c"


def test_leader_elector_reports_the_loss_when_another_replica_holds_the_lease() -> None:
    leases, clock = FakeLeases(), FakeClock()
    leader = elector(leases, clock, "a", duration=0.4, renew_seconds=0.2)
    assert leader.try_acquire_or_renew()
    leases.objects[("kstep", "kstep-operator")]["spec"]["holderIdentity"] = "b"

    assert leader._renew_before_deadline() == "b holds the Lease now"


def test_leader_elector_reports_the_loss_when_renewals_fail_past_the_deadline() -> None:
    leases, clock = FakeLeases(), FakeClock()
    leader = elector(leases, clock, "a", duration=0.4, renew_seconds=0.05)
    assert leader.try_acquire_or_renew()
    leases.failing = True
    attempts = 0

    def later() -> None:
        nonlocal attempts
        attempts += 1
        clock.now += 0.1

    leases.before_get = later

    assert leader._renew_before_deadline() == "the Lease was not renewed for 0.35 s"
    assert attempts == 4
    assert leader.is_leader is False


def test_leader_elector_renews_through_a_short_outage() -> None:
    leases, clock = FakeLeases(), FakeClock()
    leader = elector(leases, clock, "a", duration=0.4, renew_seconds=0.05)
    assert leader.try_acquire_or_renew()
    leases.failing = True
    threading.Timer(0.05, lambda: setattr(leases, "failing", False)).start()

    assert leader._renew_before_deadline() is None
    assert leader.is_leader


def test_leader_elector_calls_back_once_when_the_lease_is_lost() -> None:
    leases, clock = FakeLeases(), FakeClock()
    leader = elector(leases, clock, "a", duration=0.2, renew_seconds=0.05)
    assert leader.try_acquire_or_renew()
    lost: list[str] = []
    done = threading.Event()

    def on_lost(why: str) -> None:
        lost.append(why)
        done.set()

    leader.keep_renewing(on_lost)
    leases.objects[("kstep", "kstep-operator")]["spec"]["holderIdentity"] = "b"

    assert done.wait(5)
    leader.stop()
    assert lost == ["b holds the Lease now"]


def test_leader_elector_release_lets_a_standby_take_over_at_once() -> None:
    leases, clock = FakeLeases(), FakeClock()
    leader, standby = elector(leases, clock, "a"), elector(leases, clock, "b")
    assert leader.try_acquire_or_renew()
    assert not standby.try_acquire_or_renew()

    leader.release()

    assert leases.holder() is None
    assert standby.try_acquire_or_renew()
    assert leases.holder() == "b"


def test_leader_elector_acquire_returns_false_when_stopped() -> None:
    leases, clock = FakeLeases(), FakeClock()
    assert elector(leases, clock, "a").try_acquire_or_renew()
    standby = elector(leases, clock, "b", duration=2.0, renew_seconds=0.01)
    threading.Timer(0.1, standby.stop).start()

    assert standby.acquire() is False


def test_leader_elector_rejects_a_lease_shorter_than_two_renew_periods() -> None:
    with pytest.raises(ValueError, match="at least twice the renew period"):
        elector(FakeLeases(), FakeClock(), "a", duration=5.0, renew_seconds=3.0)


def test_operator_settings_reject_a_lease_shorter_than_two_renew_periods(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KSTEP_OPERATOR_LEASE_DURATION_SECONDS", "5")
    monkeypatch.setenv("KSTEP_OPERATOR_LEASE_RENEW_SECONDS", "3")

    with pytest.raises(ValidationError, match="at least twice the renew period"):
        OperatorSettings()

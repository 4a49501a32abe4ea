"""Run the test control plane and the kubelet stand-in until interrupted.

    PYTHONPATH=tests .venv/bin/python -m testbed [RUN_DIR]

Prints ``KUBECONFIG=<admin kubeconfig>`` once everything is ready, so that kubectl, helm or a
second pytest session (``KSTEP_TEST_KUBECONFIG``) can use the cluster. Ctrl-C or SIGTERM stops
every process it started.
"""

from __future__ import annotations

import logging
import signal
import sys
import tempfile
import threading
from pathlib import Path

from testbed.binaries import bin_dir, missing_binaries
from testbed.controlplane import ControlPlane
from testbed.kubelet_standin import KubeletStandIn

logger = logging.getLogger(__name__)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    run_dir = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="kstep-testbed-"))
    directory = bin_dir()
    missing = missing_binaries(directory)
    if missing:
        print(f"missing in {directory}: {', '.join(missing)}; run hack/testbed-binaries.sh")
        return 1

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    plane = ControlPlane(directory, run_dir)
    standin: KubeletStandIn | None = None
    try:
        access = plane.start()
        assert access.admin_token is not None and access.ca_path is not None
        standin = KubeletStandIn(
            server=access.server,
            token=access.admin_token,
            ca_path=access.ca_path,
            run_dir=run_dir,
            serving_cert=plane.issue_serving_cert("kubelet-standin"),
        ).start()
        print(f"KUBECONFIG={access.admin_kubeconfig}", flush=True)
        print(f"# unprivileged user: KUBECONFIG={access.user_kubeconfig}", flush=True)
        stop.wait()
    finally:
        if standin is not None:
            standin.stop()
        plane.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""`kstep-operator`: run the operator, or its inline executor.

kstep-operator [run]                      reconcile PipelineRuns and StepRuns
kstep-operator executor --socket PATH     serve inline steps (in its own container)
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import tempfile
import threading
import time

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `kstep-operator` command."""
    parser = argparse.ArgumentParser(prog="kstep-operator", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="reconcile PipelineRuns and StepRuns (the default)")
    executor = commands.add_parser("executor", help="serve inline steps on a Unix socket")
    executor.add_argument("--socket", required=True, help="path of the Unix socket")
    executor.add_argument("--threads", type=int, default=16, help="threads per worker")
    executor.add_argument(
        "--idle-exit-seconds",
        type=float,
        default=None,
        help="exit after this long with no operator connected and no step running",
    )
    args = parser.parse_args(argv)

    from kstep_operator.logs import configure_logging

    configure_logging(os.environ.get("KSTEP_OPERATOR_LOG_FORMAT", "text"))
    if args.command == "executor":
        from kstep_operator.inline.executor import main as serve

        return serve(args.socket, args.threads, args.idle_exit_seconds)
    return run_operator()


def run_operator() -> int:
    """Start the operator and block until it stops."""
    import kopf

    from kstep._settings import Settings
    from kstep.stores import Stores
    from kstep_operator.context import Operator
    from kstep_operator.handlers import register
    from kstep_operator.health import Health
    from kstep_operator.inline.client import start_embedded_executor
    from kstep_operator.kube import Kube
    from kstep_operator.leader import LeaderElector, exit_on_lost
    from kstep_operator.metrics import Metrics
    from kstep_operator.settings import OperatorSettings

    settings = OperatorSettings()
    store_settings = Settings()
    kube = Kube.from_environment(settings.api_qps_workers)
    metrics = Metrics()
    health = Health()
    if settings.metrics_port:
        metrics.serve(settings.metrics_host, settings.metrics_port, health)

    # A standby touches nothing, not even the stores, until it holds the Lease; it loses the
    # Lease only by exiting.
    elector = None
    if settings.leader_election:
        elector = LeaderElector.from_settings(kube, settings)
        elector.acquire()
        elector.keep_renewing(on_lost=exit_on_lost)
    metrics.leader.set(1)

    stores = Stores.open(store_settings)
    socket_path = settings.executor_socket
    if socket_path is None:
        digest = hashlib.sha256(store_settings.metadata_url.encode()).hexdigest()[:12]
        socket_path = os.path.join(tempfile.gettempdir(), f"kstep-executor-{digest}.sock")
        start_embedded_executor(socket_path, settings.inline_workers)

    op = Operator(settings, store_settings, kube, stores, socket_path, metrics=metrics)
    health.add_liveness("reconcile-workers", op.queue.alive)
    health.add_readiness("inline-executor", op.executor.ready.is_set)
    registry = kopf.OperatorRegistry()
    register(registry, op)
    op.start()
    # The watches list every object first; after that the cache is complete enough for the
    # sweep to judge missing Jobs (it still confirms with a GET before failing a step).
    threading.Timer(3.0, op.cache.synced.set).start()

    logger.info("The kstep operator starts (namespaces: %s).", settings.namespaces or "all")
    kopf.run(
        registry=registry,
        standalone=True,
        namespaces=settings.namespaces,
        clusterwide=not settings.namespaces,
    )
    op.stop()
    time.sleep(0.1)
    if elector is not None:
        elector.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())

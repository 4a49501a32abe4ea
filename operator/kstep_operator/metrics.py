"""Prometheus metrics of the operator, served on `/metrics`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kstep_operator.health import Health, serve

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

_RUN_OUTCOMES = ("completed", "failed", "cancelled")
_STEP_OUTCOMES = ("completed", "failed", "cached", "skipped", "cancelled")
_RUNTIMES = ("inline", "isolated")
_RECONCILED_KINDS = ("run", "step")


class Metrics:
    """Every metric the operator publishes, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.runs = Counter(
            "kstep_pipeline_runs_total",
            "Pipeline runs that ended, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.runs_active = Gauge(
            "kstep_pipeline_runs_active", "Pipeline runs running now.", registry=self.registry
        )
        self.steps = Counter(
            "kstep_step_runs_total",
            "Step runs that ended, by outcome and runtime.",
            ["outcome", "runtime"],
            registry=self.registry,
        )
        self.steps_active = Gauge(
            "kstep_step_runs_active", "Step runs running now.", registry=self.registry
        )
        self.step_duration = Histogram(
            "kstep_step_duration_seconds",
            "Time from a step run's start to its end, by runtime.",
            ["runtime"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.transition_latency = Histogram(
            "kstep_transition_latency_seconds",
            "Time from the last upstream step finishing to its downstream StepRun's creation.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.cache_hits = Counter(
            "kstep_cache_hits_total", "Steps served from the cache.", registry=self.registry
        )
        self.queue_depth = Gauge(
            "kstep_queue_depth", "Objects waiting to be reconciled.", registry=self.registry
        )
        self.reconcile_errors = Counter(
            "kstep_reconcile_errors_total",
            "Reconciles that failed with an error, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.reconcile_duration = Histogram(
            "kstep_reconcile_duration_seconds",
            "Time one reconcile took, by kind.",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.longest_running_run = Gauge(
            "kstep_pipeline_run_longest_running_seconds",
            "Time since the oldest pipeline run still running started (0 when none runs).",
            registry=self.registry,
        )
        self.leader = Gauge(
            "kstep_operator_leader",
            "1 while this replica holds the leader Lease (or runs without election).",
            registry=self.registry,
        )

        # Every labelled series exists from the start, at zero, so that rates and alerts work
        # before the first run fails or the first reconcile errs.
        for outcome in _RUN_OUTCOMES:
            self.runs.labels(outcome)
        for outcome in _STEP_OUTCOMES:
            for runtime in _RUNTIMES:
                self.steps.labels(outcome, runtime)
        for runtime in _RUNTIMES:
            self.step_duration.labels(runtime)
        for kind in _RECONCILED_KINDS:
            self.reconcile_errors.labels(kind)
            self.reconcile_duration.labels(kind)

    def serve(self, host: str, port: int, health: Health | None = None) -> None:
        """Serve `/metrics`, with `/healthz` and `/readyz`, over HTTP on a background thread."""
        serve(host, port, self.registry, health or Health())

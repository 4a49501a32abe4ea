"""kstep's operator: reconciles PipelineRun and StepRun resources into Jobs and inline steps.

Layers, from the outside in:

- `handlers`: thin kopf handlers. They only record what the watches saw in the `cache` and
  queue the affected objects; they never block.
- `runs` and `steps`: controllers. Each reconciles one object at a time, taken from the
  `workqueue`, as a procedure: observe (cache, metadata store), compute the desired state
  (`reconcile`), act (`kube`, the inline executor), record status.
- `reconcile`: pure functions (what to start next, a StepRun's or Job's manifest, a run's
  status from its steps). They import neither kopf nor a Kubernetes client.
- `kube`: the small API layer over the Kubernetes client.
- `inline`: the executor that runs inline steps in warm worker processes, one per code
  version, with no access to the operator's credentials.

Around them, for running the process: `leader` (leader election on a Lease, so that one
replica reconciles at a time), `metrics` and `health` (`/metrics`, `/healthz` and `/readyz` on
one port), `settings` and `logs`.
"""

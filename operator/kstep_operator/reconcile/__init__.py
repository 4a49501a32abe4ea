"""Pure reconcile logic: decisions and manifests, with no I/O.

Nothing here imports kopf or a Kubernetes client; every function takes plain data (specs,
phases, settings) and returns plain data, so it is tested without a cluster.
"""

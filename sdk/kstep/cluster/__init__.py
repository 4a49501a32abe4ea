"""Running kstep on Kubernetes: the custom resources' spec models, names and rendering.

The spec models here are the single source of the CRD schemas in `crds/`; the operator and
the SDK both use them. Nothing in this package talks to a cluster at import time.
"""

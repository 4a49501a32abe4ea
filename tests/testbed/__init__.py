"""The project's test bed: real components started for a test session.

What runs, each on loopback and free ports, stopped by its own PID when the session ends:

- ``controlplane``: etcd, kube-apiserver and kube-controller-manager (Job, garbage collector,
  namespace and service-account controllers), with a throwaway CA, an admin and an
  unprivileged user.
- ``kubelet_standin``: a kubelet stand-in that registers one Node, binds pending pods to it and
  runs their containers' commands as local processes.
- ``postgres``: a throwaway Postgres cluster, or a fresh database in a given server.
- ``s3``: an S3-compatible server (moto) with a fresh bucket per test.

``plugin`` turns these into pytest fixtures; ``docs/testing.md`` explains how to run them.
"""

"""The inline executor: runs inline StepRuns in warm worker processes, one per code version.

The operator talks to an executor process over a Unix socket. The executor keeps one worker
process per code version (image or code archive) and store configuration, started with a
clean environment: only the run's store settings, never the operator's credentials or
Kubernetes access. A worker runs many steps at once on threads through the step-runner, so
steps of the same code version start in milliseconds, and steps of different code versions
never share a Python process (their modules cannot clash).

On a cluster the executor runs in its own container of the operator's pod, without the
operator's service account token; on its own, the operator starts one as a child process.
The outcome of every step lives in the metadata store, so an operator restart loses nothing:
the executor keeps running its steps, and a restarted operator reads their results back.
"""

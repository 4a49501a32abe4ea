"""Fixtures of the Helm chart's tests. `helm` comes from the test bed (tests/testbed/plugin.py)."""

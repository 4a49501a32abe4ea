# The test bed's fixtures (control plane, kubelet stand-in, Postgres, S3): tests/testbed/plugin.py
pytest_plugins = ["testbed.plugin"]

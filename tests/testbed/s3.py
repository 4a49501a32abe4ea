"""A real S3-compatible server on loopback: moto's server mode, run from the test environment.

Credentials are moto's conventional ``testing`` pair. They are never put into the test
process' own environment: ``S3Bucket.env`` holds them for the code under test (a subprocess,
a pod, or ``monkeypatch``), so nothing leaks into a developer's shell or other tests.
"""

from __future__ import annotations

import logging
import secrets
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from testbed.processes import ComponentError, ManagedProcess, free_port, wait_until

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class S3Bucket:
    """A fresh bucket on the test S3 server, and how to reach it."""

    endpoint_url: str
    bucket: str
    access_key_id: str = "testing"
    secret_access_key: str = "testing"
    region: str = "us-east-1"

    @property
    def env(self) -> dict[str, str]:
        """Variables that point boto3 (and the AWS CLI) of the code under test at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
        }

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"

    def client(self) -> Any:
        """Return a boto3 S3 client for this server with explicit credentials."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}),
        )


class S3Server:
    """``moto_server`` as a background process, stopped by its PID."""

    def __init__(self, process: ManagedProcess, endpoint_url: str, started_in: float) -> None:
        self.process = process
        self.endpoint_url = endpoint_url
        self.started_in = started_in

    @staticmethod
    def executable() -> Path:
        return Path(sys.executable).parent / "moto_server"

    @classmethod
    def start(cls, run_dir: Path) -> S3Server:
        began = time.monotonic()
        executable = cls.executable()
        if not executable.exists():
            raise FileNotFoundError(f"no moto_server next to {sys.executable}")
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        process = ManagedProcess(
            "s3",
            [str(executable), "-H", "127.0.0.1", "-p", str(port)],
            log_path=run_dir / "logs" / "s3.log",
        ).start()
        try:
            wait_until(
                lambda: urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).status == 200,
                timeout=60,
                what="the S3 server answering",
                check=process.raise_if_exited,
            )
        except TimeoutError as exc:
            process.stop()
            raise ComponentError(process.describe_failure(str(exc))) from exc
        except BaseException:
            process.stop()
            raise
        server = cls(process, endpoint, time.monotonic() - began)
        logger.info("S3 server is ready at %s after %.1f s", endpoint, server.started_in)
        return server

    def create_bucket(self) -> S3Bucket:
        bucket = S3Bucket(self.endpoint_url, f"kstep-test-{secrets.token_hex(4)}")
        bucket.client().create_bucket(Bucket=bucket.bucket)
        return bucket

    def delete_bucket(self, bucket: S3Bucket) -> None:
        """Empty and delete a bucket, so the in-memory server does not grow over a session."""
        client = bucket.client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket.bucket):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket.bucket, Delete={"Objects": keys})
        client.delete_bucket(Bucket=bucket.bucket)

    def stop(self) -> None:
        self.process.stop()

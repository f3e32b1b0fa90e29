"""pytest plugin: a real S3 HTTP server (moto's server mode) in a subprocess, and fresh buckets on it.

Fixtures:
- ``s3_server`` (session): an ``S3Server`` with ``endpoint_url``, ``stop()``, ``start()`` (same port) and
  ``admin()`` (a plain boto3 client for setting up and inspecting). moto keeps its state in memory, so a
  stop forgets every bucket.
- ``private_s3_server`` (function): an ``S3Server`` of its own, for tests that stop it mid-test.
- ``s3_bucket`` / ``versioned_s3_bucket`` (function): an ``S3Bucket`` with a fresh unique name on
  ``s3_server``, emptied and removed afterwards; ``.settings(**overrides)`` gives ``S3StoreSettings``.
"""

import contextlib
import http.client
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from storage.settings import S3StoreSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class S3Server:
    """A moto S3 server subprocess on a fixed 127.0.0.1 port that can be stopped and started again."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or _free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        """Starts the server and returns once it answers HTTP."""
        assert self._process is None, "already running"
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                raise RuntimeError(f"moto server exited at start (port {self.port} taken?)")
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
            try:
                connection.request("GET", "/moto-api/")
                connection.getresponse().read()
                return
            except (ConnectionError, TimeoutError, http.client.HTTPException):
                time.sleep(0.05)
            finally:
                connection.close()
        self.stop()
        raise RuntimeError(f"moto server did not answer within {timeout_s} s")

    def stop(self) -> None:
        """Stops the server (its state is lost); the port stays reserved for ``start``."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    @property
    def running(self) -> bool:
        """True between ``start`` and ``stop``."""
        return self._process is not None

    def admin(self, **config: Any) -> "S3Client":
        """A plain boto3 client for test set-up and inspection; close it when done."""
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 2}, **config),
        )


@dataclass(frozen=True)
class S3Bucket:
    """A bucket on the test server."""

    name: str
    endpoint_url: str
    versioned: bool

    def settings(self, **overrides: Any) -> S3StoreSettings:
        """Store settings pointing at this bucket (path-style, test credentials)."""
        values: dict[str, Any] = {
            "kind": "s3",
            "bucket": self.name,
            "endpoint_url": self.endpoint_url,
            "region_name": REGION,
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
            "path_style": True,
        }
        return S3StoreSettings.model_validate(values | overrides)


def create_bucket(server: S3Server, *, versioned: bool) -> S3Bucket:
    """Creates a uniquely named bucket (versioning enabled when asked)."""
    name = f"camgate-test-{uuid.uuid4().hex[:16]}"
    client = server.admin()
    try:
        client.create_bucket(Bucket=name)
        if versioned:
            client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    finally:
        client.close()
    return S3Bucket(name, server.endpoint_url, versioned)


def remove_bucket(server: S3Server, bucket: S3Bucket) -> None:
    """Deletes every version and the bucket, so the session's server does not grow."""
    if not server.running:
        return
    client = server.admin()
    try:
        with contextlib.suppress(ClientError, BotoCoreError):
            for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket.name):
                entries = [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
                if entries:
                    objects: list[Any] = [{"Key": e["Key"], "VersionId": e["VersionId"]} for e in entries]
                    client.delete_objects(Bucket=bucket.name, Delete={"Objects": objects, "Quiet": True})
            client.delete_bucket(Bucket=bucket.name)
    finally:
        client.close()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto S3 server for the whole test session."""
    server = S3Server()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_s3_server() -> Iterator[S3Server]:
    """A moto S3 server of the test's own, free to be stopped and restarted."""
    server = S3Server()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Iterator[S3Bucket]:
    """A fresh unversioned bucket."""
    bucket = create_bucket(s3_server, versioned=False)
    yield bucket
    remove_bucket(s3_server, bucket)


@pytest.fixture
def versioned_s3_bucket(s3_server: S3Server) -> Iterator[S3Bucket]:
    """A fresh bucket with versioning enabled."""
    bucket = create_bucket(s3_server, versioned=True)
    yield bucket
    remove_bucket(s3_server, bucket)

"""The gateway as a separate process (``python -m gateway serve``), so tests can SIGKILL it."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.mosquitto import MosquittoBroker

SECRET_KEY = "s" * 40


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    """One gateway instance; ``start`` waits until /readyz says the database and broker are up."""

    def __init__(self, database_url: str, data_dir: Path, broker: MosquittoBroker, **env: str) -> None:
        self.port = free_port()
        self.log = data_dir / "gateway.log"
        self.env = {
            **os.environ,
            "CAMGATE_ENVIRONMENT": "test",
            "CAMGATE_DATABASE__URL": database_url,
            "CAMGATE_DATA_DIR": str(data_dir),
            "CAMGATE_SECURITY__SECRET_KEY": SECRET_KEY,
            "CAMGATE_NOTIFY__MAILBOX_DIR": str(data_dir / "mailbox"),
            "CAMGATE_HTTP__PORT": str(self.port),
            "CAMGATE_MQTT__HOST": broker.host,
            "CAMGATE_MQTT__PORT": str(broker.port),
            "CAMGATE_MQTT__USERNAME": broker.gateway_username,
            "CAMGATE_MQTT__PASSWORD": broker.gateway_password,
            "CAMGATE_LOG_LEVEL": "WARNING",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30) -> None:
        """Starts the process and waits for readiness."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve"], env=self.env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"gateway exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"gateway not ready in {timeout_s} s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no clean-up, no acknowledgement of anything in progress."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM and wait: a clean shutdown."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

"""Development only: a private Mosquitto with the project's own policy (deploy/mosquitto/conf.d), so
``camgate demo`` needs nothing configured. Production brokers are set up as docs/broker.md says."""

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from gateway.adapters.broker_auth import BrokerFiles, reload_broker, write_broker_files
from gateway.domain.credentials import hash_broker_secret
from gateway.errors import ConfigError

POLICY = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto" / "conf.d" / "camgate.conf"


def find_mosquitto() -> str | None:
    """The mosquitto binary; Debian installs it in /usr/sbin, often not on PATH."""
    return shutil.which("mosquitto", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DevBroker:
    """A Mosquitto listening on 127.0.0.1:``port`` with its files in ``directory``."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.password_file = directory / "passwd"
        self.acl_file = directory / "acl"
        self.pid_file = directory / "mosquitto.pid"
        self.log_file = directory / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The broker's process id (once started)."""
        if self._process is None:
            raise RuntimeError("the broker is not started")
        return self._process.pid

    def set_cameras(self, secrets: Mapping[str, str]) -> None:
        """Development and benchmarks: camera accounts straight from plain secrets (serial -> secret),
        no gateway account; reloads a running broker."""
        self.directory.mkdir(parents=True, exist_ok=True)
        accounts = [(serial, hash_broker_secret(secret)) for serial, secret in secrets.items()]
        write_broker_files(BrokerFiles(self.password_file, self.acl_file), accounts, [])
        if self._process is not None and self._process.poll() is None:
            reload_broker(pid=self._process.pid)
            time.sleep(0.2)  # the broker reloads on its next loop turn

    def start(self) -> None:
        """Starts the broker (the password and ACL files must exist) and waits until it listens."""
        binary = find_mosquitto()
        if binary is None:
            raise ConfigError(
                "mosquitto is not installed: run scripts/bootstrap (or apt-get install mosquitto)"
            )
        if not POLICY.exists():
            raise ConfigError(f"{POLICY} not found: camgate demo runs from a source checkout")
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "mosquitto.conf"
        lines = [
            # A development broker keeps the invoking user, so its files need no hand-over to 'mosquitto'.
            "user root" if os.geteuid() == 0 else "",
            f"pid_file {self.pid_file}",
            f"persistence_location {self.directory}/",
            f"log_dest file {self.log_file}",
            f"password_file {self.password_file}",
            f"acl_file {self.acl_file}",
            POLICY.read_text(),
            f"listener {self.port} 127.0.0.1",
            "use_username_as_clientid true",
        ]
        conf.write_text("\n".join(lines) + "\n")
        self._process = subprocess.Popen(  # noqa: S603 - a fixed binary and our own config
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
                raise ConfigError(f"mosquitto exited at start:\n{tail}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise ConfigError("mosquitto did not start listening within 10 s")

    def stop(self) -> None:
        """Stops the broker."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()

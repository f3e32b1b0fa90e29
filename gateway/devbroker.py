"""Development only: a private Mosquitto with the project's own policy (deploy/mosquitto/conf.d and the
policy plugin deploy/mosquitto/plugin), so ``camgate demo`` needs nothing configured. Production brokers
are set up as docs/broker.md says."""

import hashlib
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

_DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto"
POLICY = _DEPLOY / "conf.d" / "camgate.conf"
PLUGIN_SOURCE = _DEPLOY / "plugin" / "camgate_policy.c"
# The headers come from Debian's mosquitto-dev and libmosquitto-dev (scripts/bootstrap installs them).
_CFLAGS = ("-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror")


def find_mosquitto() -> str | None:
    """The mosquitto binary; Debian installs it in /usr/sbin, often not on PATH."""
    return shutil.which("mosquitto", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_policy_plugin(directory: Path) -> Path:
    """Compiles the broker policy plugin into ``directory`` (once per source version); returns the .so.

    The broker loads plugins after dropping privileges: ``directory`` must be readable by its user.
    """
    source = PLUGIN_SOURCE.read_bytes()
    target = directory / f"camgate_policy-{hashlib.sha256(source).hexdigest()[:16]}.so"
    if target.exists():
        return target
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise ConfigError("no C compiler to build the broker policy plugin: apt-get install gcc")
    temp = directory / f".{target.name}.{os.getpid()}.tmp"
    built = subprocess.run(  # noqa: S603 - a fixed compiler and our own source
        [compiler, *_CFLAGS, "-o", str(temp), str(PLUGIN_SOURCE)], capture_output=True, text=True
    )
    if built.returncode != 0:
        temp.unlink(missing_ok=True)
        raise ConfigError(
            "cannot build the broker policy plugin (apt-get install mosquitto-dev libmosquitto-dev):\n"
            + built.stderr[-2000:]
        )
    temp.chmod(0o755)
    temp.replace(target)  # atomic: concurrent builders never load a half-written file
    return target


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
        plugin = build_policy_plugin(self.directory)
        conf = self.directory / "mosquitto.conf"
        lines = [
            # A development broker keeps the invoking user, so its files need no hand-over to 'mosquitto'.
            "user root" if os.geteuid() == 0 else "",
            f"pid_file {self.pid_file}",
            f"persistence_location {self.directory}/",
            f"log_dest file {self.log_file}",
            f"password_file {self.password_file}",
            f"acl_file {self.acl_file}",
            f"plugin {plugin}",
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

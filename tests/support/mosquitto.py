"""A real Mosquitto for tests, started with the project's own policy (deploy/mosquitto/conf.d) and its
policy plugin (deploy/mosquitto/plugin, compiled once per test session).

``mosquitto_broker`` (function-scoped: a start takes ~10 ms) yields a ``MosquittoBroker`` on a free
127.0.0.1 port in a temp directory of its own: persistence, pid file, log, and the password and ACL
files rendered by ``gateway.adapters.broker_auth``. The test main file mirrors the production site file
(deploy/mosquitto/mosquitto.conf) with a single plain listener; the policy file is copied verbatim.

Run as root, the broker drops to the ``mosquitto`` user exactly as in production, so its directory and
files are handed to that user: a permission mistake fails here first. ``MosquittoBroker.client`` makes
paho clients (closed at teardown) that record what they receive: assertions look at what a subscriber
got, never at the sender's PUBACK, which Mosquitto sends for publishes its ACL refused.

``MosquittoBroker.set_plugin(None)`` runs it without the plugin, as a broker deployed before it: the
gateway's own defences are tested on that.

Without a mosquitto binary (or the plugin's compiler and headers) the fixture skips, or fail when the CI
environment variable is set.
"""

import atexit
import contextlib
import functools
import os
import pwd
import queue
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.adapters import broker_auth
from gateway.devbroker import build_policy_plugin
from gateway.domain.credentials import hash_broker_secret
from gateway.errors import ConfigError

POLICY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "conf.d"
BROKER_USER = "mosquitto"  # the user mosquitto drops to when started as root
GATEWAY_USERNAME = "camgate-gateway"
START_TIMEOUT_S = 5.0
WAIT_S = 5.0  # how long a client waits for something that should happen
AUTOSAVE_INTERVAL_S = 1.0  # autosave_interval in deploy/mosquitto/conf.d/camgate.conf

_LISTEN_LINE = re.compile(r"Opening ipv[46] listen socket on port (\d+)")


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary; Debian puts it in /usr/sbin, often missing from PATH."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    return shutil.which("mosquitto", path=search)


class MqttTestClient:
    """A paho client (MQTT 3.1.1 or 5) that connects synchronously and queues what it receives."""

    def __init__(
        self,
        broker: "MosquittoBroker",
        username: str | None,
        password: str | None,
        *,
        client_id: str = "",
        protocol: MQTTProtocolVersion = mqtt.MQTTv311,
        clean: bool = True,
        session_expiry_s: int = 0,
    ) -> None:
        self._broker = broker
        self._clean = clean
        self._session_expiry_s = session_expiry_s
        self.protocol = protocol
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            clean_session=clean if protocol != mqtt.MQTTv5 else None,
            # A kicked or refused client must stay down: tests assert on exactly that.
            reconnect_on_failure=False,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.disconnected = threading.Event()
        self._connack: queue.Queue[ReasonCode] = queue.Queue()
        self._subacks: queue.Queue[list[ReasonCode]] = queue.Queue()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)
        self.client.on_subscribe = lambda _c, _u, _mid, codes, _p: self._subacks.put(list(codes))

    def connect(self) -> ReasonCode:
        """Connects and returns the CONNACK reason code; a refused client stops trying again."""
        properties = None
        if self.protocol == mqtt.MQTTv5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self._session_expiry_s
        self.disconnected.clear()
        self.client.connect(
            self._broker.host,
            self._broker.port,
            clean_start=self._clean if self.protocol == mqtt.MQTTv5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )
        self.client.loop_start()
        try:
            code = self._connack.get(timeout=WAIT_S)
        except queue.Empty:
            raise AssertionError(f"no CONNACK within {WAIT_S} s") from None
        if code.is_failure:
            self.close()
        return code

    def subscribe(self, *topics: str, qos: int = 1) -> list[ReasonCode]:
        """Subscribes and waits for the SUBACK; returns the granted codes."""
        self.client.subscribe([(topic, qos) for topic in topics])
        return self._subacks.get(timeout=WAIT_S)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publishes and waits until the broker acknowledged (which says nothing about the ACL)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout=WAIT_S)
        if not info.is_published():
            raise AssertionError(f"no acknowledgement for {topic} within {WAIT_S} s")

    def next_message(self, timeout: float = WAIT_S) -> mqtt.MQTTMessage:
        """The next message received; fails the test after ``timeout``."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout} s") from None

    def drain(self) -> list[mqtt.MQTTMessage]:
        """Whatever has been received and not yet taken."""
        taken: list[mqtt.MQTTMessage] = []
        while not self.messages.empty():
            taken.append(self.messages.get_nowait())
        return taken

    def close(self) -> None:
        """Disconnects cleanly and stops the network thread."""
        self.client.disconnect()
        self.client.loop_stop()
        # paho closes its wake-up socket pair only in __del__; a client in a reference cycle (ours are,
        # through their callbacks) is collected with its sockets in no set order: ResourceWarning.
        self.client._reset_sockets(sockpair_only=True)

    def _on_connect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.ConnectFlags,
        code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        self._connack.put(code)

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.DisconnectFlags,
        _code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        self.disconnected.set()


class MosquittoBroker:
    """A mosquitto process in its own directory; survives kill()/start() with its persistence."""

    def __init__(self, binary: str, directory: Path, plugin: Path | None) -> None:
        self.binary = binary
        self.directory = directory
        self.plugin = plugin
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.gateway_username = GATEWAY_USERNAME
        self.gateway_password = "gw-" + os.urandom(12).hex()
        self.pid_file = directory / "mosquitto.pid"
        self.log_file = directory / "mosquitto.log"
        self.config_file = directory / "mosquitto.conf"
        self.files = broker_auth.BrokerFiles(
            password_file=directory / "passwd",
            acl_file=directory / "acl",
            group=BROKER_USER if os.geteuid() == 0 else None,
        )
        self._gateways = {self.gateway_username: broker_auth.hash_gateway_password(self.gateway_password)}
        self._devices: dict[str, str] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._clients: list[MqttTestClient] = []
        self._prepare()

    @property
    def pid(self) -> int:
        """The running broker's pid."""
        if self._process is None:
            raise AssertionError("the broker is not running")
        return self._process.pid

    def start(self) -> None:
        """Starts the broker (again: same port, same persistence) and waits until it answers CONNECTs."""
        if self._process is not None:
            raise AssertionError("the broker is already running")
        with (self.directory / "stderr.log").open("ab") as stderr:
            self._process = subprocess.Popen(
                [self.binary, "-c", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answers_connect():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self._process.kill()
                self._process.wait()
                self._process = None
                raise AssertionError(f"mosquitto did not start:\n{self.log_tail()}{self._stray_ports()}")
            time.sleep(0.005)
        if stray := self._stray_ports():
            raise AssertionError(stray)
        if self.plugin is not None and f"Loading plugin: {self.plugin}" not in self.log_text():
            raise AssertionError(f"mosquitto did not load {self.plugin}:\n{self.log_tail()}")

    def sync(self) -> None:
        """Waits until everything the broker acknowledged before the call is on disk.

        The policy saves every ``autosave_interval`` (1 s), not after every change (docs/broker.md): a
        SIGKILL loses what arrived since the last save. Mosquitto 2.0 counts whole seconds and saves when
        more than the interval has passed (``last_backup + interval < now``), so a save can come up to two
        seconds after a message; waiting 2.5 s covers that.
        """
        time.sleep(2 * AUTOSAVE_INTERVAL_S + 0.5)
        if not self._answers_connect():
            raise AssertionError(f"mosquitto does not answer:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL, as in a crash: the broker saves nothing on the way out."""
        self._signal_and_wait(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM and wait: a clean shutdown."""
        self._signal_and_wait(signal.SIGTERM)

    def set_plugin(self, plugin: Path | None) -> None:
        """Loads (or, with None, drops) the policy plugin from the next start(); the broker must be
        stopped. Tests use it to plant what a broker without the plugin accepts."""
        if self._process is not None:
            raise AssertionError("stop the broker before changing its plugin")
        self.plugin = plugin
        self._write_config()

    def add_device(self, serial: str, secret: str) -> None:
        """Adds (or replaces) a camera account and reloads the running broker."""
        self.add_devices({serial: secret})

    def add_devices(self, secrets: dict[str, str]) -> None:
        """Adds several camera accounts with one reload."""
        self._devices.update({serial: hash_broker_secret(secret) for serial, secret in secrets.items()})
        self.reload()

    def remove_device(self, serial: str) -> None:
        """Removes a camera account and reloads the running broker."""
        del self._devices[serial]
        self.reload()

    def add_gateway(self, username: str, password: str) -> None:
        """Adds a gateway instance account and reloads the running broker."""
        self._gateways[username] = broker_auth.hash_gateway_password(password)
        self.reload()

    def remove_gateway(self, username: str) -> None:
        """Removes a gateway instance account and reloads the running broker."""
        del self._gateways[username]
        self.reload()

    def reload(self) -> None:
        """Rewrites the password and ACL files; a running broker gets SIGHUP and is waited for."""
        self._write_auth()
        if self._process is None:
            return  # read at the next start()
        # A pid file left behind by kill() may name a stranger by now: only ever signal our broker.
        if broker_auth.read_pid_file(self.pid_file) != self.pid:
            raise AssertionError(f"{self.pid_file} does not name the broker this fixture started")
        reloads = self.log_text().count("Reloading config.")
        broker_auth.reload_broker(pid_file=self.pid_file)
        self._wake()
        deadline = time.monotonic() + START_TIMEOUT_S
        while self.log_text().count("Reloading config.") == reloads:
            if time.monotonic() > deadline:
                raise AssertionError(f"mosquitto did not reload:\n{self.log_tail()}")
            time.sleep(0.005)
        # The log line comes first; a CONNACK after it means the loop turn that reloaded is over.
        if not self._answers_connect():
            raise AssertionError(f"mosquitto stopped answering after a reload:\n{self.log_tail()}")

    def client(
        self,
        username: str | None,
        password: str | None,
        *,
        client_id: str = "",
        protocol: MQTTProtocolVersion = mqtt.MQTTv311,
        clean: bool = True,
        session_expiry_s: int = 0,
    ) -> MqttTestClient:
        """A test client for this broker (not yet connected), closed at teardown."""
        made = MqttTestClient(
            self,
            username,
            password,
            client_id=client_id,
            protocol=protocol,
            clean=clean,
            session_expiry_s=session_expiry_s,
        )
        self._clients.append(made)
        return made

    def gateway_client(self, *, clean: bool = True, session_expiry_s: int = 0) -> MqttTestClient:
        """A test client logged in as the default gateway account over MQTT 5."""
        return self.client(
            self.gateway_username,
            self.gateway_password,
            protocol=mqtt.MQTTv5,
            clean=clean,
            session_expiry_s=session_expiry_s,
        )

    def log_text(self) -> str:
        """The broker's log so far."""
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def log_tail(self, lines: int = 30) -> str:
        """The end of the broker's log and stderr, for failure messages."""
        stderr = self.directory / "stderr.log"
        extra = stderr.read_text(errors="replace") if stderr.exists() else ""
        return "\n".join(self.log_text().splitlines()[-lines:]) + ("\n" + extra if extra else "")

    def close(self) -> None:
        """Closes the clients, stops the broker and removes its directory."""
        for made in self._clients:
            made.close()
        if self._process is not None:
            self.kill()  # its directory goes next: nothing to save
        shutil.rmtree(self.directory, ignore_errors=True)

    def _prepare(self) -> None:
        conf_d = self.directory / "conf.d"
        conf_d.mkdir()
        for policy in sorted(POLICY_DIR.glob("*.conf")):
            shutil.copyfile(policy, conf_d / policy.name)
        (self.directory / "data").mkdir()
        self._write_config()
        self._write_auth()
        if os.geteuid() == 0:
            # Production ownership: the broker's user owns its state; it must read config on SIGHUP.
            user = pwd.getpwnam(BROKER_USER)
            for path in [self.directory, *self.directory.rglob("*")]:
                os.chown(path, user.pw_uid, user.pw_gid)

    def _write_config(self) -> None:
        # Same order as deploy/mosquitto/mosquitto.conf: site paths, the plugin, the policy, the listener.
        self.config_file.write_text(
            f"pid_file {self.pid_file}\n"
            f"persistence_location {self.directory / 'data'}/\n"
            f"log_dest file {self.log_file}\n"
            f"password_file {self.files.password_file}\n"
            f"acl_file {self.files.acl_file}\n"
            + (f"plugin {self.plugin}\n" if self.plugin is not None else "")
            + f"include_dir {self.directory / 'conf.d'}\n"
            f"listener {self.port} {self.host}\n"
            "use_username_as_clientid true\n"
        )

    def _write_auth(self) -> None:
        gateways = [broker_auth.BrokerAccount(name, hashed) for name, hashed in self._gateways.items()]
        broker_auth.write_broker_files(self.files, self._devices.items(), gateways)

    def _stray_ports(self) -> str:
        """Complaint about listen sockets other than ours (a listener option in the policy opens 1883)."""
        ports = {int(port) for port in _LISTEN_LINE.findall(self.log_text())}
        if ports <= {self.port}:
            return ""
        return (
            f"\nmosquitto opened ports {sorted(ports)}, expected only {self.port}: "
            f"{POLICY_DIR} holds a listener option"
        )

    def _answers_connect(self) -> bool:
        """True when the broker answers an anonymous CONNECT (with a refusal): its loop is running."""
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as probe:
                probe.sendall(_ANONYMOUS_CONNECT)
                return probe.recv(4)[:1] == b"\x20"  # CONNACK
        except OSError:
            return False

    def _wake(self) -> None:
        """Gets a signal handled now: mosquitto blocks signals while it waits (up to 100 ms when idle)
        for network events."""
        with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=1.0):
            pass

    def _signal_and_wait(self, signum: signal.Signals) -> None:
        if self._process is None:
            raise AssertionError("the broker is not running")
        self._process.send_signal(signum)
        self._wake()
        try:
            self._process.wait(timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None


# MQTT 3.1.1 CONNECT, clean session, keepalive 10 s, client id "probe", no username.
_ANONYMOUS_CONNECT = bytes([0x10, 17, 0, 4]) + b"MQTT" + bytes([4, 0x02, 0, 10, 0, 5]) + b"probe"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@functools.cache
def _policy_plugin() -> Path:
    """The policy plugin, built once per test session where the broker's user can read it."""
    directory = Path(tempfile.mkdtemp(prefix="camgate-mosquitto-plugin-"))
    directory.chmod(0o755)
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return build_policy_plugin(directory)


def _unavailable(message: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def mosquitto_broker() -> Iterator[MosquittoBroker]:
    """A running broker with the project's policy, one gateway account and no cameras yet."""
    binary = find_mosquitto()
    if binary is None:
        _unavailable("mosquitto is not installed (Debian: apt-get install mosquitto)")
    try:
        plugin = _policy_plugin()
    except ConfigError as exc:
        _unavailable(str(exc))
    # Not pytest's tmp_path: its parents are mode 0700, closed to the user the broker drops to.
    directory = Path(tempfile.mkdtemp(prefix="camgate-mosquitto-"))
    broker = MosquittoBroker(binary, directory, plugin)
    try:
        broker.start()
        yield broker
    finally:
        broker.close()

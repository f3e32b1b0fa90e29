"""Many paho-mqtt clients driven by one asyncio event loop: no thread and no task per client.

Each ``MqttLink`` is one paho ``Client`` (callback API v2) on paho's external-loop API, the approach
aiomqtt takes without its task per client: the socket is registered with the loop (readable calls
``loop_read``; writable, only while paho has bytes queued, calls ``loop_write``) and one ``PahoHub`` task
calls ``loop_misc`` (keep-alive pings) for every open link once a second. FIELD_NOTES measured ~7 KB per
idle connection held this way.

paho's TCP connect is blocking (``socket.create_connection``), so ``MqttLink.connect`` runs it in the
hub's small thread pool, as aiomqtt does. paho calls the socket callbacks from that thread then, so they
hop to the loop with ``call_soon_threadsafe``. How many connects run at once is the caller's choice.

paho stops here: listeners get plain values on the loop thread, and errors are ``LinkError``
subclasses — ``ConnectFailed`` (TCP error, no CONNACK in time, dropped while connecting),
``ConnectRefused`` (a CONNACK with a failure code, e.g. bad credentials) and ``NotConnected``.
"""

import asyncio
import contextlib
import logging
import resource
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal, Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)

MqttVersion = Literal["3.1.1", "5"]
MISC_INTERVAL_S = 1.0  # keep-alive resolution; paho pings after `keepalive` seconds of silence


class LinkError(Exception):
    """Root of this module's errors."""


class ConnectFailed(LinkError):
    """No MQTT session came up: the TCP connect failed, no CONNACK in time, or the socket dropped."""


class ConnectRefused(LinkError):
    """The broker answered CONNECT with a failure (bad credentials, not authorised, ...)."""


class NotConnected(LinkError):
    """A publish or subscribe on a link that is not up."""


@dataclass(frozen=True, slots=True)
class Will:
    """The last will the broker publishes when the connection drops without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


class LinkListener(Protocol):
    """What a link reports, always on the event loop's thread; ``link`` tells stale links apart."""

    def link_up(self, link: "MqttLink") -> None:
        """The broker accepted the connection."""

    def link_down(self, link: "MqttLink", reason: str) -> None:
        """A link that was up is gone (clean disconnect, broker gone, keep-alive timeout, abort)."""

    def message(self, link: "MqttLink", topic: str, payload: bytes) -> None:
        """A message arrived on a subscribed topic."""

    def acked(self, link: "MqttLink", mid: int, accepted: bool) -> None:
        """The PUBACK for ``mid``; ``accepted`` is False for an MQTT 5 failure reason code."""


def raise_open_file_limit() -> int:
    """Raises this process's soft open-file limit to its hard limit (one socket per camera); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):  # some containers forbid it: keep what we have
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class PahoHub:
    """The event loop side shared by every link: socket watches, the connect threads, keep-alives."""

    def __init__(self, *, connect_threads: int = 8) -> None:
        self._connect_threads = connect_threads
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_id = 0
        self._executor: ThreadPoolExecutor | None = None
        self._misc: asyncio.Task[None] | None = None
        self._open: set[MqttLink] = set()
        self._idle = asyncio.Event()  # no link has a socket

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop the links live on."""
        if self._loop is None:
            raise RuntimeError("PahoHub.start() has not been awaited")
        return self._loop

    @property
    def open_links(self) -> int:
        """Links with a socket."""
        return len(self._open)

    async def start(self) -> None:
        """Binds the hub to the running loop and starts the keep-alive task."""
        self._loop = asyncio.get_running_loop()
        self._thread_id = threading.get_ident()
        self._executor = ThreadPoolExecutor(self._connect_threads, thread_name_prefix="mqtt-connect")
        self._idle.set()
        self._misc = asyncio.create_task(self._keepalives(), name="paho-misc")

    async def wait_idle(self, timeout_s: float) -> bool:
        """Waits until no link has a socket; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Waits for open sockets to close (bounded), closes what is left, and stops the threads."""
        if self._loop is None:
            return
        await self.wait_idle(timeout_s)
        if self._executor is not None:
            # A connect still in a thread finishes (paho's own 5 s timeout at worst), off the loop...
            await asyncio.to_thread(self._executor.shutdown, True)
            await asyncio.sleep(0)  # ...and the socket callbacks it queued for the loop run now.
        for link in list(self._open):
            link.force_close()
        if self._misc is not None:
            self._misc.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._misc

    def call(self, fn: Callable[[], None]) -> None:
        """Runs ``fn`` on the loop: now when already there, else soon (paho's connect thread)."""
        if threading.get_ident() == self._thread_id:
            fn()
        else:
            self.loop.call_soon_threadsafe(fn)

    def opened(self, link: "MqttLink") -> None:
        """A link got a socket (on the loop thread)."""
        self._open.add(link)
        self._idle.clear()

    def closed(self, link: "MqttLink") -> None:
        """A link's socket is gone (on the loop thread)."""
        self._open.discard(link)
        if not self._open:
            self._idle.set()

    async def in_thread(self, fn: Callable[[], object]) -> None:
        """Runs a blocking paho call in the connect threads."""
        await self.loop.run_in_executor(self._executor, fn)

    async def _keepalives(self) -> None:
        while True:
            await asyncio.sleep(MISC_INTERVAL_S)
            for link in list(self._open):
                link.misc()


class MqttLink:
    """One MQTT connection (one paho client); a reconnect is a new link, so paho never re-sends on
    its own: what to re-publish after a reconnect is the owner's decision."""

    def __init__(
        self,
        hub: PahoHub,
        listener: LinkListener,
        *,
        client_id: str,
        username: str,
        password: str,
        version: MqttVersion = "3.1.1",
        will: Will | None = None,
        max_inflight: int = 20,
    ) -> None:
        self._hub = hub
        self._listener = listener
        self._v5 = version == "5"
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=None if self._v5 else True,
            protocol=MQTTProtocolVersion.MQTTv5 if self._v5 else MQTTProtocolVersion.MQTTv311,
        )
        client.username_pw_set(username, password)
        if will is not None:
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        # Past 65,535 unacknowledged QoS 1 publishes paho's message ids wrap and messages vanish
        # (FIELD_NOTES); beyond this cap paho queues them unsent.
        client.max_inflight_messages_set(max_inflight)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        self._client = client
        self._client_id = client_id
        self._fd = -1
        self._up = False
        self._connack: asyncio.Future[None] | None = None

    @property
    def is_up(self) -> bool:
        """True between a successful CONNACK and the loss of the connection."""
        return self._up

    async def connect(self, host: str, port: int, *, keepalive_s: int = 60, timeout_s: float = 10.0) -> None:
        """Opens the connection and waits for the CONNACK; raises ConnectFailed or ConnectRefused."""
        loop = self._hub.loop
        self._connack = loop.create_future()

        # MQTT 5 takes clean_start; 3.1.1 insists on the default and uses clean_session (set above).
        def open_socket() -> object:
            if self._v5:
                return self._client.connect(host, port, keepalive_s, clean_start=True)
            return self._client.connect(host, port, keepalive_s)

        try:
            await self._hub.in_thread(open_socket)
        except OSError as exc:
            raise ConnectFailed(f"{host}:{port}: {exc}") from None
        try:
            # On timeout wait_for cancels the future, so a late CONNACK or close finds it done.
            await asyncio.wait_for(self._connack, timeout_s)
        except TimeoutError:
            self.abort()
            raise ConnectFailed(f"{host}:{port}: no CONNACK within {timeout_s} s") from None
        except asyncio.CancelledError:
            self.abort()
            raise

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int:
        """Queues a publish and returns its message id (the PUBACK comes to ``acked``)."""
        if not self._up:
            raise NotConnected(topic)
        return self._client.publish(topic, payload, qos=qos, retain=retain).mid

    def subscribe(self, topic: str, qos: int = 1) -> None:
        """Subscribes (the SUBACK is not waited for)."""
        if not self._up:
            raise NotConnected(topic)
        self._client.subscribe(topic, qos)

    def disconnect(self) -> None:
        """A clean DISCONNECT: the broker does not publish the will."""
        self._client.disconnect()

    def abort(self) -> None:
        """Drops the connection without a DISCONNECT, as a crash or a cut cable would: the broker sees
        the socket close and publishes the will. paho notices on its next read and cleans up."""
        sock = self._client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def force_close(self) -> None:
        """Last resort (shutdown, or paho failed): closes the socket now, whatever paho was doing."""
        self._unwatch()
        self._hub.closed(self)
        sock = self._client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        if self._up:
            self._up = False
            self._notify(lambda: self._listener.link_down(self, "closed"))

    def misc(self) -> None:
        """paho's periodic work: keep-alive pings and the ping timeout."""
        self._guard(self._client.loop_misc)

    # --- paho callbacks: on the loop thread, except the socket ones during connect() -----------

    def _on_connect(
        self, _c: paho.Client, _u: object, _f: paho.ConnectFlags, reason: ReasonCode, _p: object
    ) -> None:
        future = self._connack
        if reason.is_failure:
            if future is not None and not future.done():
                future.set_exception(ConnectRefused(str(reason)))
            return  # the broker closes the socket; paho then reports the disconnect
        self._up = True
        if future is not None and not future.done():
            future.set_result(None)
        self._notify(lambda: self._listener.link_up(self))

    def _on_disconnect(
        self, _c: paho.Client, _u: object, _f: paho.DisconnectFlags, reason: ReasonCode, _p: object
    ) -> None:
        future = self._connack
        if future is not None and not future.done():
            future.set_exception(ConnectFailed(f"connection closed before CONNACK: {reason}"))
        if self._up:
            self._up = False
            self._notify(lambda: self._listener.link_down(self, str(reason)))

    def _on_message(self, _c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        topic, payload = message.topic, bytes(message.payload)
        self._notify(lambda: self._listener.message(self, topic, payload))

    def _on_publish(self, _c: paho.Client, _u: object, mid: int, reason: ReasonCode, _p: object) -> None:
        accepted = not reason.is_failure
        self._notify(lambda: self._listener.acked(self, mid, accepted))

    def _on_socket_open(self, _c: paho.Client, _u: object, sock: object) -> None:
        fd = _fileno(sock)
        self._hub.call(lambda: self._watch(fd))

    def _on_socket_close(self, _c: paho.Client, _u: object, _sock: object) -> None:
        # paho calls this just before closing the socket: unregister while the fd still names it.
        self._hub.call(self._closed)

    def _on_register_write(self, _c: paho.Client, _u: object, sock: object) -> None:
        fd = _fileno(sock)
        self._hub.call(lambda: self._hub.loop.add_writer(fd, self._writable))

    def _on_unregister_write(self, _c: paho.Client, _u: object, sock: object) -> None:
        fd = _fileno(sock)
        self._hub.call(lambda: self._remove_writer(fd))

    # --- the loop side ---------------------------------------------------------------------

    def _watch(self, fd: int) -> None:
        self._fd = fd
        self._hub.opened(self)
        self._hub.loop.add_reader(fd, self._readable)

    def _closed(self) -> None:
        self._unwatch()
        self._hub.closed(self)

    def _unwatch(self) -> None:
        if self._fd >= 0:
            self._hub.loop.remove_reader(self._fd)
            self._hub.loop.remove_writer(self._fd)
            self._fd = -1

    def _remove_writer(self, fd: int) -> None:
        if fd == self._fd:
            self._hub.loop.remove_writer(fd)

    def _readable(self) -> None:
        self._guard(self._client.loop_read)

    def _writable(self) -> None:
        self._guard(self._client.loop_write)

    def _guard(self, step: Callable[[], object]) -> None:
        # One client's surprise must not take down the loop the other thousand share.
        try:
            step()
        except Exception:
            log.exception("paho client %s failed; dropping its connection", self._client_id)
            self.force_close()

    def _notify(self, event: Callable[[], None]) -> None:
        # A listener's bug is logged here, so it never unwinds through paho's parser state.
        try:
            event()
        except Exception:
            log.exception("MQTT listener failed")


def _fileno(sock: object) -> int:
    fileno = getattr(sock, "fileno", None)
    return int(fileno()) if callable(fileno) else -1

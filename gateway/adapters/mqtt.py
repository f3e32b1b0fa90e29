"""The gateway's MQTT client: paho-mqtt in its own network thread, messages handed to the event loop,
acknowledgements sent by us, in arrival order, only when a message is settled.

What keeps messages from being lost here (FIELD_NOTES): ``manual_ack`` so the PUBACK waits for the commit;
a persistent session (MQTT 5 ``clean_start=False`` with a session expiry, 3.1.1 ``clean_session=False``)
under a stable client id, so the broker queues for us while we are away; acks released strictly in
arrival order; and never a failure reason code in a PUBACK (a transient failure leaves the message
unacknowledged instead). After a reconnect the broker redelivers what we had not acknowledged, so
messages of the old connection are dropped from the ack queue and their late settlement is ignored.

Retained messages on the uplink are never events: a camera may not publish them (the broker's policy
plugin refuses them), and one planted before that would be replayed on every subscribe, long after its
camera was revoked. They are acknowledged in their turn and ignored, and with MQTT 5 (retain-as-published
shows the flag on live messages too) deleted from the broker by an empty retained publish.
"""

import asyncio
import logging
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway import metrics
from gateway.config import MqttSettings

log = logging.getLogger(__name__)


class Incoming:
    """A received message; ``settle()`` once it is processed (stored, dead-lettered or dropped)."""

    __slots__ = ("_sequencer", "arrived_at", "generation", "mid", "payload", "qos", "settled", "topic")

    def __init__(
        self, sequencer: "AckSequencer", topic: str, payload: bytes, qos: int, mid: int, arrived_at: float
    ) -> None:
        self._sequencer = sequencer
        self.arrived_at = arrived_at  # monotonic
        self.generation = sequencer.generation
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.mid = mid
        self.settled = False

    @property
    def stale(self) -> bool:
        """True when the connection it came on is gone (the broker will redeliver it)."""
        return self.generation != self._sequencer.generation

    def settle(self) -> None:
        """Marks the message done; its PUBACK goes out once every earlier message is done too."""
        self._sequencer.settle(self)


class AckSequencer:
    """Releases acknowledgements in arrival order (paho and the broker expect them so), and knows how long
    the head of its queue has waited: the age every acknowledgement behind it waits too."""

    def __init__(
        self, send_ack: Callable[[int, int], None], monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._send_ack = send_ack
        self._monotonic = monotonic
        self._pending: deque[Incoming] = deque()
        self.generation = 0
        _LIVE.add(self)

    def arrived(self, topic: str, payload: bytes, qos: int, mid: int) -> Incoming:
        """Registers a message in arrival order."""
        msg = Incoming(self, topic, payload, qos, mid, self._monotonic())
        self._pending.append(msg)
        return msg

    def settle(self, msg: Incoming) -> None:
        """Marks ``msg`` done and acknowledges the settled head of the queue."""
        if msg.stale:
            return
        msg.settled = True
        while self._pending and self._pending[0].settled:
            head = self._pending.popleft()
            if head.qos > 0:
                self._send_ack(head.mid, head.qos)

    def reset(self) -> None:
        """The connection dropped: nothing pending can be acknowledged any more."""
        self.generation += 1
        self._pending.clear()

    @property
    def unacknowledged(self) -> int:
        """Messages received and not yet acknowledged."""
        return len(self._pending)

    @property
    def oldest_age_s(self) -> float:
        """Seconds the oldest unacknowledged message has waited (0 when there is none)."""
        return self._monotonic() - self._pending[0].arrived_at if self._pending else 0.0


# The gauges read every live sequencer at scrape time (one per MQTT client; tests build several).
_LIVE: "weakref.WeakSet[AckSequencer]" = weakref.WeakSet()
metrics.UNACKNOWLEDGED.set_function(lambda: sum(s.unacknowledged for s in list(_LIVE)))
metrics.OLDEST_UNACKNOWLEDGED.set_function(lambda: max((s.oldest_age_s for s in list(_LIVE)), default=0.0))


class MqttClient:
    """One persistent MQTT session of the gateway."""

    def __init__(self, settings: MqttSettings, subscriptions: list[str]) -> None:
        self._settings = settings
        self._subscriptions = subscriptions
        v5 = settings.protocol == "5"
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.username,  # the broker enforces it anyway (use_username_as_clientid)
            clean_session=None if v5 else False,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            manual_ack=True,
        )
        if settings.password is not None:
            self._client.username_pw_set(settings.username, settings.password.get_secret_value())
        else:
            self._client.username_pw_set(settings.username)
        # Cap our own unacknowledged publishes: past 65,535 paho's message ids wrap and messages vanish.
        self._client.max_inflight_messages_set(100)
        self._client.reconnect_delay_set(1, 30)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[Incoming] = asyncio.Queue()
        self._sequencer = AckSequencer(self._ack)
        self.connected = asyncio.Event()

    # --- paho's thread -------------------------------------------------------------------------

    def _on_connect(
        self,
        client: paho.Client,
        _userdata: object,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        _props: object,
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        log.info("connected to the broker (session present: %s)", flags.session_present)
        group = self._settings.shared_group
        filters = [f"$share/{group}/{t}" if group else t for t in self._subscriptions]
        if self._settings.protocol == "5":
            # Retain-as-published keeps the retain flag on live deliveries, so a retained publish is
            # recognised as such however it arrives; retained messages are still sent at subscribe, so
            # one planted before the broker's policy plugin is seen once and deleted (_arrived).
            options = SubscribeOptions(qos=1, retainAsPublished=True)
            client.subscribe([(f, options) for f in filters])
        else:
            client.subscribe([(f, 1) for f in filters])
        self._call(self.connected.set)

    def _on_disconnect(
        self, _client: paho.Client, _userdata: object, _flags: object, reason: ReasonCode, _props: object
    ) -> None:
        log.warning("disconnected from the broker: %s", reason)
        self._call(self._disconnected)

    def _on_message(self, _client: paho.Client, _userdata: object, message: paho.MQTTMessage) -> None:
        self._call(self._arrived, message.topic, message.payload, message.qos, message.mid, message.retain)

    def _call(self, fn: Callable[..., None], *args: object) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)

    # --- the event loop ------------------------------------------------------------------------

    def _arrived(self, topic: str, payload: bytes, qos: int, mid: int, retain: bool) -> None:
        msg = self._sequencer.arrived(topic, payload, qos, mid)
        if retain:
            self._ignore_retained(msg)
        else:
            self._queue.put_nowait(msg)

    def _ignore_retained(self, msg: Incoming) -> None:
        """A retained uplink message is a replay, not an event: settled in its turn and not ingested."""
        metrics.RETAINED_UPLINK.inc()
        # Not a warning per message: a hostile camera must not be able to flood the log.
        log.debug("ignoring a retained message on %s", msg.topic)
        # Delete it from the broker (the policy plugin lets a gateway publish exactly this). Only with
        # MQTT 5: our own empty publish comes back to us, recognisable only by its retain flag; an empty
        # payload is never cleared again, so it cannot loop.
        if msg.payload and self._settings.protocol == "5":
            self._client.publish(msg.topic, b"", qos=1, retain=True)
        msg.settle()

    def _disconnected(self) -> None:
        self.connected.clear()
        self._sequencer.reset()
        # What is queued but not started will be redelivered; drop it rather than process it twice.
        while not self._queue.empty():
            self._queue.get_nowait()

    def _ack(self, mid: int, qos: int) -> None:
        self._client.ack(mid, qos)

    async def start(self) -> None:
        """Connects in the background (reconnecting for ever) and returns at once."""
        self._loop = asyncio.get_running_loop()
        s = self._settings
        properties = None
        if s.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it untyped
            properties.SessionExpiryInterval = s.session_expiry_s
            properties.ReceiveMaximum = s.receive_maximum
            self._client.connect_async(
                s.host, s.port, s.keepalive_s, clean_start=False, properties=properties
            )
        else:
            self._client.connect_async(s.host, s.port, s.keepalive_s)
        self._client.loop_start()

    async def messages(self) -> AsyncIterator[Incoming]:
        """Received messages, in arrival order."""
        while True:
            yield await self._queue.get()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Queues a QoS 1 publish; paho sends it now or after the next reconnect."""
        self._client.publish(topic, payload, qos=1, retain=retain)

    @property
    def unacknowledged(self) -> int:
        """Messages received and not yet acknowledged."""
        return self._sequencer.unacknowledged

    @property
    def oldest_unacknowledged_s(self) -> float:
        """Seconds the oldest unacknowledged message has waited (0 when there is none)."""
        return self._sequencer.oldest_age_s

    async def stop(self) -> None:
        """Disconnects cleanly; unacknowledged messages stay with the broker for the next session."""
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

"""Ports: the interfaces services depend on, where more than one implementation exists or is injected
in tests. The SQL database is not behind a port (see docs/architecture.md)."""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from gateway.domain.accounts import Channel
from gateway.domain.plans.money import Money


class Clock(Protocol):
    """Time source; tests inject a controllable one so throttles and expiries need no sleeping."""

    def now(self) -> datetime:
        """The current aware UTC time."""
        ...


@dataclass(frozen=True)
class Message:
    """A one-time-code or notice message to a person."""

    channel: Channel
    to: str
    subject: str
    body: str


class MessageSender(Protocol):
    """Delivers messages on one channel (SMTP for e-mail, a webhook for SMS, a folder in development)."""

    async def send(self, message: Message) -> None:
        """Delivers or raises ``DeliveryFailed``."""
        ...


class PasswordHasher(Protocol):
    """Slow password hashing, run off the event loop."""

    async def hash(self, password: str) -> str:
        """A self-describing hash (argon2id)."""
        ...

    async def verify(self, stored_hash: str, password: str) -> bool:
        """True when the password matches."""
        ...


# --- push providers (docs/push.md) ---------------------------------------------------------------


@dataclass(frozen=True)
class PushTarget:
    """Where one account's pushes go: a webhook URL now; a device token or subscription later."""

    id: str
    account_id: str
    kind: str
    address: str
    created_at: datetime


@dataclass(frozen=True)
class Notification:
    """One alert to push; ``delivery_id`` (the outbox row) and ``event_id`` let receivers de-duplicate."""

    delivery_id: str
    event_id: str
    device_id: str
    device_name: str
    kind: str
    captured_at: datetime
    thumbnail_url: str | None


class DeliveryOutcome(StrEnum):
    """What a provider's answer means for the outbox."""

    DELIVERED = "delivered"
    RETRY = "retry"  # transient: network error, timeout, 5xx, 429 …
    GONE = "gone"  # the target no longer exists (HTTP 404/410, unregistered token): remove it


@dataclass(frozen=True)
class DeliveryResult:
    """A provider's answer; ``retry_after_s`` is the provider's own Retry-After, when it sent one."""

    outcome: DeliveryOutcome
    status: int | None
    detail: str
    retry_after_s: float | None = None


class PushProvider(Protocol):
    """Delivers notifications of one target kind (webhook; FCM, APNs, Web Push later)."""

    async def check_address(self, address: str) -> str:
        """The normalised address, or raises ``InvalidRequest`` with a stable code."""
        ...

    def secret_for(self, target_id: str) -> str | None:
        """A secret to show the owner once at registration (the webhook signing secret), if any."""
        ...

    async def send(self, target: PushTarget, notification: Notification) -> DeliveryResult:
        """Delivers one notification; transport failures are a RETRY result, never an exception."""
        ...


class Publisher(Protocol):
    """Publishes to cameras (QoS 1); returns at once, delivery continues in the background."""

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Queues one message."""
        ...


# --- payments (docs/plans.md) --------------------------------------------------------------------


@dataclass(frozen=True)
class Receipt:
    """A provider's acceptance of a charge or a refund; ``provider_ref`` is its id for the transaction."""

    provider: str
    provider_ref: str


class PaymentProvider(Protocol):
    """Takes and returns money (a ledger now; a card network later). A refusal raises ``PaymentDeclined``
    (gateway.adapters.payments); any other exception means the outcome is unknown and nothing is recorded."""

    async def charge(self, account_id: str, amount: Money, reference: str, description: str) -> Receipt:
        """Charges ``amount`` (never negative); ``reference`` is our id for the payment (a subscription)."""
        ...

    async def refund(self, account_id: str, amount: Money, reference: str, original_ref: str) -> Receipt:
        """Returns ``amount`` of the charge the provider knows as ``original_ref``."""
        ...

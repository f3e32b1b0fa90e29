"""Ports: the interfaces services depend on, where more than one implementation exists or is injected
in tests. The SQL database is not behind a port (see docs/architecture.md)."""

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from gateway.domain.accounts import Channel


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

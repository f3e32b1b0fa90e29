"""The camera wire protocol (docs/protocol.md): topics and the binary envelope, shared by the gateway and
device_sim. Pure: no MQTT library is imported here.

Every payload is one envelope::

    b"CG" | version (1 byte) | header length (2 bytes, big-endian) | header (UTF-8 JSON) | body (raw bytes)

so a 94 KB JPEG travels as 94 KB (no base64), and the same bytes work on MQTT 3.1.1 and 5.
"""

import json
import re
import struct
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

MAGIC = b"CG"
VERSION = 1
MAX_HEADER_BYTES = 4096
_PREFIX = struct.Struct(">2sBH")
TOPIC_ROOT = "cam"
_SERIAL = re.compile(r"^[A-Z0-9]{8,32}$")
EVENT_ID = r"^[A-Za-z0-9_.-]{1,64}$"  # the same characters object keys allow


class WireError(ValueError):
    """A payload or topic that does not follow the protocol; ``reason`` is a stable dead-letter reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Channel(StrEnum):
    """The last level of a camera topic."""

    ALERT = "alert"  # camera → gateway, QoS 1
    STATUS = "status"  # camera → gateway (and the broker, as the camera's last will)
    CONFIG = "config"  # gateway → camera, retained
    CLIP = "clip"  # camera → gateway (reserved for event clips)


@dataclass(frozen=True)
class Topic:
    serial: str
    channel: Channel

    def __str__(self) -> str:
        return f"{TOPIC_ROOT}/{self.serial}/{self.channel.value}"


def topic(serial: str, channel: Channel) -> str:
    """The topic of a camera's channel."""
    return str(Topic(serial, channel))


def parse_topic(name: str) -> Topic:
    """Parses ``cam/<serial>/<channel>``; the broker's ACL has already tied the serial to the sender."""
    parts = name.split("/")
    if len(parts) < 3 or parts[0] != TOPIC_ROOT or not _SERIAL.match(parts[1]):
        raise WireError("bad_topic", f"not a camera topic: {name!r}")
    try:
        channel = Channel(parts[2])
    except ValueError:
        raise WireError("bad_topic", f"unknown channel in {name!r}") from None
    if channel is not Channel.CLIP and len(parts) != 3:
        raise WireError("bad_topic", f"unexpected levels in {name!r}")
    return Topic(parts[1], channel)


class Header(BaseModel):
    # Unknown header fields are ignored: a camera on newer firmware must still be understood.
    model_config = ConfigDict(extra="ignore", frozen=True)


class AlertHeader(Header):
    """An alert with its snapshot as the body."""

    type: Literal["alert"] = "alert"
    event_id: str = Field(pattern=EVENT_ID, description="Unique per camera; a re-send reuses it.")
    captured_at: AwareDatetime
    kind: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$", description="motion, person, sound, …")
    content_type: Literal["image/jpeg"] = "image/jpeg"
    body_size: int = Field(ge=1)


class StatusHeader(Header):
    """Presence: sent on connect (online) and registered as the last will (offline)."""

    type: Literal["status"] = "status"
    online: bool
    firmware: str | None = Field(None, max_length=64)
    at: AwareDatetime | None = None


class ConfigHeader(Header):
    """The effective settings for a camera, published retained on its config topic."""

    type: Literal["config"] = "config"
    alerts_enabled: bool
    event_kinds: list[str] | None = Field(None, description="None: all kinds.")
    snoozed_until: AwareDatetime | None = None
    issued_at: AwareDatetime


AnyHeader = Annotated[AlertHeader | StatusHeader | ConfigHeader, Field(discriminator="type")]
_headers: TypeAdapter[AlertHeader | StatusHeader | ConfigHeader] = TypeAdapter(AnyHeader)


def encode(header: Header, body: bytes = b"") -> bytes:
    """One envelope."""
    raw = header.model_dump_json(exclude_none=True).encode()
    if len(raw) > MAX_HEADER_BYTES:
        raise WireError("header_too_large", f"{len(raw)} bytes")
    return _PREFIX.pack(MAGIC, VERSION, len(raw)) + raw + body


def decode(payload: bytes) -> tuple[AlertHeader | StatusHeader | ConfigHeader, memoryview]:
    """Splits and validates an envelope; raises WireError with a dead-letter reason."""
    if len(payload) < _PREFIX.size:
        raise WireError("truncated", f"{len(payload)} bytes is shorter than the envelope prefix")
    magic, version, length = _PREFIX.unpack_from(payload)
    if magic != MAGIC:
        raise WireError("bad_magic", "payload does not start with b'CG'")
    if version != VERSION:
        raise WireError("unsupported_version", f"envelope version {version}, this gateway speaks {VERSION}")
    if length > MAX_HEADER_BYTES or _PREFIX.size + length > len(payload):
        raise WireError("truncated", f"header length {length} exceeds the payload")
    view = memoryview(payload)
    try:
        header = _headers.validate_json(bytes(view[_PREFIX.size : _PREFIX.size + length]))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise WireError("bad_header", f"{where}: {first['msg']}") from None
    body = view[_PREFIX.size + length :]
    if isinstance(header, AlertHeader) and len(body) != header.body_size:
        raise WireError("size_mismatch", f"header says {header.body_size} bytes, body has {len(body)}")
    return header, body


def decode_json_header(raw: bytes) -> dict[str, object]:
    """The header of an envelope as plain JSON (for dead-letter records), or {} when unreadable."""
    try:
        _, _, length = _PREFIX.unpack_from(raw)
        value = json.loads(raw[_PREFIX.size : _PREFIX.size + min(length, MAX_HEADER_BYTES)])
    except (struct.error, ValueError):
        return {}
    return value if isinstance(value, dict) else {}

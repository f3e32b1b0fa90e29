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

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

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
    CLIP = "clip"  # camera → gateway: cam/<serial>/clip/<clip_id>, one message per part


@dataclass(frozen=True)
class Topic:
    serial: str
    channel: Channel
    clip_id: str | None = None  # only on clip topics

    def __str__(self) -> str:
        tail = f"/{self.clip_id}" if self.clip_id is not None else ""
        return f"{TOPIC_ROOT}/{self.serial}/{self.channel.value}{tail}"


def topic(serial: str, channel: Channel) -> str:
    """The topic of a camera's channel."""
    return str(Topic(serial, channel))


def clip_topic(serial: str, clip_id: str) -> str:
    """The topic a camera sends the parts of one clip on."""
    return str(Topic(serial, Channel.CLIP, clip_id))


def parse_topic(name: str) -> Topic:
    """Parses ``cam/<serial>/<channel>`` (``cam/<serial>/clip/<clip_id>`` for clips); the broker's ACL
    has already tied the serial to the sender."""
    parts = name.split("/")
    if len(parts) < 3 or parts[0] != TOPIC_ROOT or not _SERIAL.match(parts[1]):
        raise WireError("bad_topic", f"not a camera topic: {name!r}")
    try:
        channel = Channel(parts[2])
    except ValueError:
        raise WireError("bad_topic", f"unknown channel in {name!r}") from None
    if channel is Channel.CLIP:
        if len(parts) != 4 or not re.match(EVENT_ID, parts[3]):
            raise WireError("bad_topic", f"a clip topic is cam/<serial>/clip/<clip_id>, not {name!r}")
        return Topic(parts[1], channel, parts[3])
    if len(parts) != 3:
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


class ClipFormat(StrEnum):
    """How a clip travels: JPEG frames the gateway encodes to VP8 WebM, or video the camera encoded."""

    JPEG_FRAMES = "jpeg_frames"  # one JPEG frame per part
    WEBM = "webm"  # byte chunks of a WebM file, stored as is
    MP4 = "mp4"  # byte chunks of an (H.264) MP4 file, stored as is


class ClipHeader(Header):
    """One part of an event clip, sent after the alert on ``cam/<serial>/clip/<clip_id>``.

    A clip is ``parts`` messages numbered from 0; every part repeats the clip's fields, so whichever
    arrives first describes the clip. A re-sent part reuses its clip id and number.
    """

    type: Literal["clip"] = "clip"
    clip_id: str = Field(pattern=EVENT_ID, description="Unique per camera; usually the alert's event id.")
    event_id: str | None = Field(None, pattern=EVENT_ID, description="The alert this clip belongs to.")
    captured_at: AwareDatetime = Field(description="Start of the recording: fixes the clip's retention.")
    format: ClipFormat
    part: int = Field(ge=0, description="This part's number, from 0.")
    parts: int = Field(ge=1, le=100_000, description="How many parts the clip has.")
    fps: float | None = Field(None, ge=1, le=60, description="Frame rate; required for jpeg_frames.")
    body_size: int = Field(ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> "ClipHeader":
        if self.part >= self.parts:
            raise ValueError(f"part {self.part} of a clip with {self.parts} parts")
        if self.format is ClipFormat.JPEG_FRAMES and self.fps is None:
            raise ValueError("fps is required for jpeg_frames")
        return self


class ConfigHeader(Header):
    """The effective settings for a camera, published retained on its config topic."""

    type: Literal["config"] = "config"
    alerts_enabled: bool
    event_kinds: list[str] | None = Field(None, description="None: all kinds.")
    snoozed_until: AwareDatetime | None = None
    issued_at: AwareDatetime


AnyHeader = Annotated[AlertHeader | ClipHeader | StatusHeader | ConfigHeader, Field(discriminator="type")]
_headers: TypeAdapter[AlertHeader | ClipHeader | StatusHeader | ConfigHeader] = TypeAdapter(AnyHeader)


def encode(header: Header, body: bytes = b"") -> bytes:
    """One envelope."""
    raw = header.model_dump_json(exclude_none=True).encode()
    if len(raw) > MAX_HEADER_BYTES:
        raise WireError("header_too_large", f"{len(raw)} bytes")
    return _PREFIX.pack(MAGIC, VERSION, len(raw)) + raw + body


def decode(payload: bytes) -> tuple[AlertHeader | ClipHeader | StatusHeader | ConfigHeader, memoryview]:
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
    if isinstance(header, AlertHeader | ClipHeader) and len(body) != header.body_size:
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

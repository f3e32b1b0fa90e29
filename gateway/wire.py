"""The camera wire protocol (docs/protocol.md): topics and the binary envelope, shared by the gateway and
device_sim. Pure: no MQTT library is imported here.

Every payload is one envelope::

    b"CG" | version (1 byte) | header length (2 bytes, big-endian) | header (UTF-8 JSON) | body (raw bytes)

so a 94 KB JPEG travels as 94 KB (no base64), and the same bytes work on MQTT 3.1.1 and 5.
"""

import math
import re
import struct
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from gateway import untrusted
from storage.keys import validate_id

MAGIC = b"CG"
VERSION = 1
MAX_HEADER_BYTES = 4096
_PREFIX = struct.Struct(">2sBH")
TOPIC_ROOT = "cam"
_SERIAL = re.compile(r"^[A-Z0-9]{8,32}$")
# The storage key rules (storage.keys.validate_id): starts with a letter or digit, never "..". An id that
# passed here but not there used to fail only when its key was built, after five retries.
EVENT_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_CONTAINERS = 64  # arrays and objects in one header: enough for any header, far below json's recursion
MAX_TEXT = 256  # the longest free-text field a header may carry
_UNSAFE = untrusted.UNSAFE_TEXT


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
        if len(parts) != 4 or not re.match(EVENT_ID, parts[3]) or ".." in parts[3]:
            raise WireError("bad_topic", f"a clip topic is cam/<serial>/clip/<clip_id>, not {name!r}")
        return Topic(parts[1], channel, parts[3])
    if len(parts) != 3:
        raise WireError("bad_topic", f"unexpected levels in {name!r}")
    return Topic(parts[1], channel)


def _printable(value: str) -> str:
    if _UNSAFE.search(value):
        raise ValueError("control characters are not allowed")
    return value


def _key_safe(value: str) -> str:
    validate_id(value, "event id")  # InvalidKey is a ValueError: a validation error like any other
    return value


WireId = Annotated[str, Field(pattern=EVENT_ID), AfterValidator(_key_safe)]
"""A camera's event or clip id: valid as a storage key segment (so its keys can always be built)."""

WireText = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(_printable)]
"""A string from a camera: at most MAX_TEXT characters, no control characters (PostgreSQL refuses NUL)."""


WireTime = Annotated[AwareDatetime, AfterValidator(untrusted.in_utc)]
"""A time from a camera, with its zone, converted to UTC (a time that cannot be is refused)."""


def printable(value: str, limit: int = MAX_TEXT) -> str:
    """``value`` with control characters replaced and cut to ``limit``: safe for any text column."""
    return untrusted.printable(value, limit)


class Header(BaseModel):
    # Unknown header fields are ignored: a camera on newer firmware must still be understood.
    model_config = ConfigDict(extra="ignore", frozen=True)


class AlertHeader(Header):
    """An alert with its snapshot as the body."""

    type: Literal["alert"] = "alert"
    event_id: WireId = Field(description="Unique per camera; a re-send reuses it.")
    captured_at: WireTime
    kind: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$", description="motion, person, sound, …")
    content_type: Literal["image/jpeg"] = "image/jpeg"
    body_size: int = Field(ge=1, le=2**31 - 1)


class StatusHeader(Header):
    """Presence: sent on connect (online) and registered as the last will (offline)."""

    type: Literal["status"] = "status"
    online: bool
    firmware: Annotated[WireText, Field(max_length=64)] | None = None
    at: WireTime | None = None


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
    clip_id: WireId = Field(description="Unique per camera; usually the alert's event id.")
    event_id: WireId | None = Field(None, description="The alert this clip belongs to.")
    captured_at: WireTime = Field(description="Start of the recording: fixes the clip's retention.")
    format: ClipFormat
    part: int = Field(ge=0, description="This part's number, from 0.")
    parts: int = Field(ge=1, le=100_000, description="How many parts the clip has.")
    fps: float | None = Field(None, ge=1, le=60, description="Frame rate; required for jpeg_frames.")
    body_size: int = Field(ge=1, le=2**31 - 1)

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
    event_kinds: list[Annotated[WireText, Field(max_length=32)]] | None = Field(
        None, max_length=64, description="None: all kinds."
    )
    snoozed_until: WireTime | None = None
    backoff_until: WireTime | None = Field(
        None, description="Over its alert rate: snapshots sent before this are not stored (docs/protocol.md)."
    )
    issued_at: WireTime


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
        value = untrusted.loads(
            bytes(view[_PREFIX.size : _PREFIX.size + length]), max_containers=MAX_CONTAINERS
        )
        header = _headers.validate_python(value)
    except untrusted.JsonRejected as exc:
        raise WireError("bad_header", printable(str(exc))) from None
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        # The message may quote the sender's text (a bad tag, a key): never let it carry a NUL onwards.
        raise WireError("bad_header", printable(f"{where}: {first['msg']}", 300)) from None
    body = view[_PREFIX.size + length :]
    if isinstance(header, AlertHeader | ClipHeader) and len(body) != header.body_size:
        raise WireError("size_mismatch", f"header says {header.body_size} bytes, body has {len(body)}")
    return header, body


def decode_json_header(raw: bytes) -> dict[str, object]:
    """The header of an envelope as a sanitised flat dict for dead-letter records; never raises.

    Only top-level scalars are kept (strings cleaned and cut, numbers finite), at most 32 of them; an
    unreadable header gives ``{"unreadable": <why>}``.
    """
    try:
        _, _, length = _PREFIX.unpack_from(raw)
        value = untrusted.loads(
            raw[_PREFIX.size : _PREFIX.size + min(length, MAX_HEADER_BYTES)], max_containers=MAX_CONTAINERS
        )
    except struct.error:
        return {"unreadable": "truncated"}
    except untrusted.JsonRejected:
        return {"unreadable": "not JSON, or nested too deeply"}
    if not isinstance(value, dict):
        return {"unreadable": "not a JSON object"}
    clean: dict[str, object] = {}
    for key, item in list(value.items())[:32]:
        clean[printable(str(key), 64)] = _scalar(item)
    return clean


def _scalar(item: object) -> object:
    if item is None or isinstance(item, bool):
        return item
    if isinstance(item, int):
        return (
            item if abs(item) < 2**53 else printable(str(item), 40)
        )  # JSON numbers beyond stay exact as text
    if isinstance(item, float):
        return item if math.isfinite(item) else None  # Infinity/NaN are not JSON: PostgreSQL refuses them
    if isinstance(item, str):
        return printable(item)
    return f"<{type(item).__name__}>"  # nested values are not kept

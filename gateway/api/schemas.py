"""Request and response bodies of the HTTP API. Requests reject unknown fields."""

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from gateway.untrusted import in_utc


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(Response):
    """RFC 9457 problem details; ``code`` is camgate's stable error code."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None
    retry_after: int | None = None


# --- accounts ------------------------------------------------------------------------------------


class GuardianConsentIn(Request):
    guardian_name: str = Field(min_length=1, max_length=100)
    guardian_contact: str = Field(min_length=3, max_length=254, description="Guardian's e-mail or phone.")
    consent: Literal[True] = Field(description="The guardian consents to the minor's use of camgate.")


class SignUpIn(Request):
    identifier: str = Field(min_length=3, max_length=254, description="E-mail address or E.164 phone number.")
    password: str = Field(min_length=1, max_length=1024)
    birth_date: date
    region: str = Field(min_length=1, max_length=16, description="Home region: where media is stored.")
    display_name: str = Field("", max_length=100)
    time_zone: str = Field("UTC", max_length=64, description="IANA time zone, e.g. Asia/Singapore.")
    guardian_consent: GuardianConsentIn | None = None


class SignUpAccepted(Response):
    identifier: str
    channel: Literal["email", "sms"]
    detail: str


class IdentifierIn(Request):
    identifier: str = Field(min_length=3, max_length=254)


class ConfirmIn(Request):
    identifier: str = Field(min_length=3, max_length=254)
    code: str = Field(min_length=1, max_length=16)
    password: str = Field(
        min_length=1,
        max_length=1024,
        description="The password given at the sign-up this code was sent for: a code activates only "
        "the credentials of the person who chose them.",
    )


class AccountOut(Response):
    id: str
    email: str | None
    phone: str | None
    display_name: str
    birth_date: date
    region: str
    time_zone: str
    locale: str
    status: Literal["pending", "active"]
    created_at: datetime


class ProfilePatch(Request):
    display_name: str | None = Field(None, max_length=100)
    time_zone: str | None = Field(None, max_length=64)
    locale: str | None = Field(None, min_length=2, max_length=16, pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


class LoginIn(Request):
    identifier: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=1024)


class SessionCreated(Response):
    token: str = Field(description="Bearer token; shown once, stored by camgate only as a hash.")
    session_id: str
    expires_at: datetime


class SessionOut(Response):
    id: str
    user_agent: str
    created_at: datetime
    expires_at: datetime
    current: bool


class SessionList(Response):
    items: list[SessionOut]


class RegionOut(Response):
    id: str
    display_name: str


class RegionList(Response):
    items: list[RegionOut]


# --- devices -------------------------------------------------------------------------------------


class BindIn(Request):
    serial: str = Field(min_length=1, max_length=64, description="Serial number printed on the label.")
    code: str = Field(min_length=1, max_length=16, description="Verification code printed on the label.")
    name: str = Field("", max_length=100)


class DeviceOut(Response):
    id: str
    serial: str
    model: str
    name: str
    bound_at: datetime | None
    online: bool | None = Field(description="From the camera's status and last will; null: never connected.")
    last_seen_at: datetime | None
    firmware: str | None


class BindOut(Response):
    outcome: Literal["bound", "already_yours"]
    device: DeviceOut


class DeviceList(Response):
    items: list[DeviceOut]


class DevicePatch(Request):
    name: str = Field(min_length=1, max_length=100)


# --- audit ---------------------------------------------------------------------------------------


class PageQuery(Request):
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=64, description="next_cursor of the previous page.")


class AuditEntryOut(Response):
    actor: str
    action: str
    target_type: str
    target_id: str
    detail: dict[str, Any]
    address: str
    at: datetime


class AuditPage(Response):
    items: list[AuditEntryOut]
    next_cursor: str | None


class Health(Response):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = {}


# --- alert settings ------------------------------------------------------------------------------

EventKind = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]


class AccountAlertsIn(Request):
    message_alerts: bool = Field(description="Off: snapshots are not collected at all.")
    event_kinds: list[EventKind] | None = Field(
        None, max_length=32, description="Only these kinds; null: all."
    )


class AccountAlertsOut(Response):
    message_alerts: bool
    event_kinds: list[str] | None
    updated_at: datetime | None


class DeviceAlertsIn(Request):
    muted: bool
    snooze_minutes: int | None = Field(
        None, ge=0, le=7 * 24 * 60, description="0 ends a snooze; null: unchanged."
    )


class DeviceAlertsOut(Response):
    muted: bool
    snoozed_until: datetime | None
    updated_at: datetime | None


UtcDatetime = Annotated[AwareDatetime, AfterValidator(in_utc)]
"""A time from a client: aware, and one UTC can express (the database stores UTC)."""


# --- events --------------------------------------------------------------------------------------


class EventQuery(Request):
    device_id: str | None = Field(None, max_length=36)
    kind: EventKind | None = None
    since: UtcDatetime | None = None
    until: UtcDatetime | None = None
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=200)


class EventOut(Response):
    id: str
    device_id: str
    kind: str
    captured_at: datetime
    received_at: datetime
    width: int
    height: int
    snapshot_bytes: int
    snapshot_url: str | None = Field(
        description="Redirects to a short-lived link, or streams the JPEG; null when not stored."
    )
    thumbnail_url: str | None
    snapshot_dropped: str | None = Field(
        None, description="Why the snapshot was not stored (rate_limited: the camera was over its rate)."
    )


class EventPage(Response):
    items: list[EventOut]
    next_cursor: str | None


# --- clips ---------------------------------------------------------------------------------------


class ClipQuery(Request):
    device_id: str | None = Field(None, max_length=36)
    since: UtcDatetime | None = None
    until: UtcDatetime | None = None
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=200)


class ClipOut(Response):
    id: str
    device_id: str
    event_id: str | None = Field(description="The camera's id of the alert the clip follows.")
    content_type: str
    bytes: int
    frames: int | None
    width: int | None
    height: int | None
    plan_id: str = Field(description="The plan in force at capture, which fixed the retention.")
    captured_at: datetime
    received_at: datetime
    retain_until: datetime = Field(description="When the clip is deleted.")
    video_url: str = Field(description="Redirects to a short-lived link, or streams the video (Range works).")


class ClipPage(Response):
    items: list[ClipOut]
    next_cursor: str | None

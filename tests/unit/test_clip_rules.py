"""The pure clip rules: admission at the first part, what later parts must match, retention from capture."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from gateway.domain.alerts import AlertPrefs
from gateway.domain.clips import (
    ClipDrop,
    admission,
    looks_like,
    mismatch,
    opted_out,
    retain_until,
)
from gateway.domain.plans import Retention
from gateway.wire import ClipFormat, ClipHeader

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TRIAL = Retention(video=True, video_days=7, snapshot_days=7)
FREE = Retention(video=False, video_days=0, snapshot_days=3)
DEMO = Retention(video=True, video_days=7, snapshot_days=7, day=timedelta(minutes=1))


def header(**changes: object) -> ClipHeader:
    values: dict[str, object] = {
        "clip_id": "e-1",
        "event_id": "e-1",
        "captured_at": NOW - timedelta(minutes=1),
        "format": ClipFormat.JPEG_FRAMES,
        "part": 0,
        "parts": 10,
        "fps": 5.0,
        "body_size": 100,
    }
    return ClipHeader.model_validate(values | changes)


@pytest.mark.parametrize(
    ("clip", "retention", "opt_out", "expected"),
    [
        (header(), TRIAL, None, None),
        (header(), FREE, None, ClipDrop.NO_VIDEO_PLAN),
        (header(), TRIAL, ClipDrop.ALERTS_OFF, ClipDrop.ALERTS_OFF),  # the owner's choice comes first
        # A capture older than the clock skew allowed (1 day) counts from now - 1 day (issue 8): a camera
        # clock set years back must not have its clips expire on arrival.
        (header(captured_at=NOW - timedelta(days=7)), TRIAL, None, None),
        (header(captured_at=NOW - timedelta(hours=3)), DEMO, None, ClipDrop.EXPIRED_ON_ARRIVAL),
        (header(captured_at=NOW - timedelta(minutes=6)), DEMO, None, None),
        (header(parts=901), TRIAL, None, ClipDrop.TOO_MANY_PARTS),
        (header(captured_at=NOW + timedelta(days=30)), TRIAL, None, None),  # clock ahead: kept from now
    ],
)
def test_admission(
    clip: ClipHeader, retention: Retention, opt_out: ClipDrop | None, expected: ClipDrop
) -> None:
    assert admission(clip, retention, opt_out, NOW, max_parts=900) == expected


def test_retention_counts_from_capture_and_never_from_a_later_arrival_or_a_clock_ahead() -> None:
    captured = NOW - timedelta(hours=20)
    assert retain_until(captured, NOW, TRIAL) == captured + timedelta(days=7)
    assert retain_until(NOW + timedelta(hours=2), NOW, TRIAL) == NOW + timedelta(days=7)
    assert retain_until(captured, NOW, DEMO) == captured + timedelta(minutes=7)
    # a clock far behind counts from the allowed skew (1 day), never from 2001
    assert retain_until(datetime(2001, 1, 1, tzinfo=UTC), NOW, TRIAL) == NOW - timedelta(days=1) + timedelta(
        days=7
    )


def test_the_owners_settings_apply_to_clips_as_to_alerts() -> None:
    assert opted_out(AlertPrefs(), None, NOW) is None
    assert opted_out(AlertPrefs(message_alerts=False), None, NOW) is ClipDrop.ALERTS_OFF
    assert opted_out(AlertPrefs(muted=True), "motion", NOW) is ClipDrop.MUTED
    snoozed = AlertPrefs(snoozed_until=NOW + timedelta(minutes=5))
    assert opted_out(snoozed, None, NOW) is ClipDrop.SNOOZED
    people_only = AlertPrefs(event_kinds=frozenset({"person"}))
    assert opted_out(people_only, "motion", NOW) is ClipDrop.KIND_NOT_WANTED
    assert opted_out(people_only, "person", NOW) is None
    assert opted_out(people_only, None, NOW) is None, "the alert's kind is unknown until it is stored"


def test_later_parts_must_agree_with_the_first() -> None:
    first = header()
    assert mismatch(first, header(part=7, body_size=5)) is None
    assert mismatch(first, header(fps=10.0)) == "fps"
    assert mismatch(first, header(parts=11, captured_at=NOW)) == "parts, captured_at"
    assert mismatch(first, header(format=ClipFormat.WEBM, fps=None)) == "format, fps"
    assert mismatch(first, header(event_id=None)) == "event_id"
    # the same instant written in another zone is the same capture
    local = first.captured_at.astimezone(timezone(timedelta(hours=7)))
    assert mismatch(first, header(captured_at=local)) is None


def test_camera_encoded_video_must_start_like_its_format() -> None:
    assert looks_like(ClipFormat.WEBM, b"\x1a\x45\xdf\xa3rest")
    assert not looks_like(ClipFormat.WEBM, b"\x00\x00\x00\x18ftypisom")
    assert looks_like(ClipFormat.MP4, b"\x00\x00\x00\x18ftypisom")
    assert not looks_like(ClipFormat.MP4, b"RIFF....AVI ")
    assert looks_like(ClipFormat.JPEG_FRAMES, b"anything: frames are checked by decoding")

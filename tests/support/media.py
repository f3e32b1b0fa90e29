"""Real JPEGs and alert envelopes for tests."""

from datetime import UTC, datetime
from functools import cache

import cv2
import numpy as np

from gateway.wire import AlertHeader, StatusHeader, encode


@cache
def jpeg(width: int = 1280, height: int = 720, seed: int = 1) -> bytes:
    """A camera-like JPEG (smooth noise, ~70-100 KB at 720p)."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), (21, 21), 0)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return bytes(data.tobytes())


def alert(
    event_id: str, *, kind: str = "motion", body: bytes | None = None, at: datetime | None = None
) -> bytes:
    """An alert envelope."""
    body = jpeg() if body is None else body
    header = AlertHeader(
        event_id=event_id,
        captured_at=at or datetime(2026, 6, 1, 12, 0, tzinfo=UTC),
        kind=kind,
        body_size=len(body),
    )
    return encode(header, body)


def status(*, online: bool, firmware: str | None = None) -> bytes:
    """A status envelope."""
    return encode(StatusHeader(online=online, firmware=firmware))

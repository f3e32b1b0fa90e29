"""JPEG validation and thumbnails with OpenCV, in a bounded thread pool (OpenCV releases the GIL)."""

import asyncio
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

cv2.setNumThreads(1)  # parallelism comes from our pool; OpenCV's own threads would oversubscribe 2 cores

_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class BadImage(ValueError):
    """The bytes are not an acceptable JPEG; the message says why."""


@dataclass(frozen=True)
class Snapshot:
    width: int
    height: int
    thumbnail: bytes


def jpeg_dimensions(data: bytes | memoryview) -> tuple[int, int]:
    """(width, height) from the JPEG's start-of-frame segment, without decoding pixels."""
    buf = bytes(data[:65536]) if len(data) > 65536 else bytes(data)
    if buf[:2] != b"\xff\xd8":
        raise BadImage("not a JPEG (no SOI marker)")
    pos = 2
    while pos + 4 <= len(buf):
        if buf[pos] != 0xFF:
            raise BadImage("corrupt JPEG segment structure")
        marker = buf[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        (length,) = struct.unpack_from(">H", buf, pos + 2)
        if marker in _SOF_MARKERS:
            if pos + 9 > len(buf):
                break
            height, width = struct.unpack_from(">HH", buf, pos + 5)
            return width, height
        pos += 2 + length
    raise BadImage("no frame header found")


def _reduction(width: int, target: int) -> int:
    """The IMREAD_REDUCED factor (1, 2, 4 or 8) that still leaves at least ``target`` pixels of width."""
    for factor in (8, 4, 2):
        if width // factor >= target:
            return factor
    return 1


_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}  # fmt: skip


def make_snapshot(data: bytes | memoryview, *, min_dim: int, max_dim: int, thumb_width: int) -> Snapshot:
    """Validates a JPEG and makes its thumbnail. Decodes at reduced scale: the DCT scaling of libjpeg
    still reads every block, so corrupt data fails, at a fraction of a full decode's cost."""
    width, height = jpeg_dimensions(data)
    if not (min_dim <= width <= max_dim and min_dim <= height <= max_dim):
        raise BadImage(f"{width}x{height} is outside {min_dim}..{max_dim} pixels")
    if bytes(data[-2:]) != b"\xff\xd9":
        raise BadImage("truncated JPEG (no EOI marker)")
    factor = _reduction(width, thumb_width)
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _REDUCED[factor])
    if image is None:
        raise BadImage("OpenCV cannot decode it")
    got_h, got_w = image.shape[:2]
    if abs(got_w - -(-width // factor)) > 1 or abs(got_h - -(-height // factor)) > 1:
        raise BadImage("decoded size disagrees with the frame header")
    thumb_height = max(1, round(height * thumb_width / width))
    if (got_w, got_h) != (thumb_width, thumb_height):
        image = cv2.resize(image, (thumb_width, thumb_height), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise BadImage("thumbnail encoding failed")
    return Snapshot(width, height, encoded.tobytes())


class ImageWorkers:
    """A bounded pool for image work, off the event loop."""

    def __init__(self, workers: int, *, min_dim: int, max_dim: int, thumb_width: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="imaging")
        self._limits = {"min_dim": min_dim, "max_dim": max_dim, "thumb_width": thumb_width}

    async def snapshot(self, data: bytes | memoryview) -> Snapshot:
        """Validates and thumbnails in the pool; raises BadImage."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: make_snapshot(data, **self._limits))

    def close(self) -> None:
        """Stops the threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)

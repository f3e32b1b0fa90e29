"""JPEG validation and thumbnails with OpenCV, in a bounded thread pool (OpenCV releases the GIL)."""

import asyncio
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from gateway.adapters.opencv import cv2, imdecode


class BadImage(ValueError):
    """The bytes are not an acceptable JPEG; the message says why."""


@dataclass(frozen=True)
class Snapshot:
    width: int
    height: int
    thumbnail: bytes


# The markers as libjpeg's reader (jdmarker.c, read_markers) treats them.
_SOI, _EOI, _SOS, _DNL = 0xD8, 0xD9, 0xDA, 0xDC
_SOF_READ = {0xC0, 0xC1, 0xC2, 0xC9, 0xCA}  # the frame types libjpeg decodes
_SOF_OTHER = {0xC3, 0xC5, 0xC6, 0xC7, 0xC8, 0xCB, 0xCD, 0xCE, 0xCF}  # libjpeg refuses these
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RST0-7: no length field
_SEGMENTS = {0xC4, 0xCC, 0xDB, 0xDD, 0xFE, *range(0xE0, 0xF0)}  # DHT DAC DQT DRI COM APPn: skipped by length


def jpeg_dimensions(data: bytes | memoryview) -> tuple[int, int]:
    """(width, height) of a JPEG as libjpeg will decode it, from its markers, without decoding pixels.

    The walk follows libjpeg's reader: standalone markers (TEM, RST0-7) carry no length, fill bytes
    (FF) may precede a marker, the first frame header (SOF) is the one decoded, and entropy-coded data
    after each scan header (SOS) holds stuffed zeros and restart markers. It is stricter than libjpeg,
    never looser: bytes libjpeg would skip as garbage, a second SOF, a DNL, a zero size, a segment
    length below 2, a frame type libjpeg cannot decode, an unknown marker, anything after EOI or no EOI
    at all are refused, so what it reports for an accepted file is what libjpeg reads."""
    buf = bytes(data)
    end = len(buf)
    if buf[:2] != b"\xff\xd8":
        raise BadImage("not a JPEG (no SOI marker)")
    pos = 2
    size: tuple[int, int] | None = None
    while True:
        if pos >= end or buf[pos] != 0xFF:
            raise BadImage(f"corrupt JPEG: no marker at byte {pos}")
        while pos < end and buf[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= end:
            raise BadImage("truncated JPEG (no EOI marker)")
        marker = buf[pos]
        pos += 1
        if marker == _EOI:
            if size is None:
                raise BadImage("no frame header found")
            if pos != end:
                raise BadImage(f"{end - pos} bytes after the EOI marker")
            return size
        if marker in _STANDALONE:
            continue
        if marker == _SOI or marker == 0x00:
            raise BadImage(f"unexpected marker FF{marker:02X} at byte {pos - 2}")
        if pos + 2 > end:
            raise BadImage("truncated JPEG segment")
        length = int.from_bytes(buf[pos : pos + 2])
        if length < 2 or pos + length > end:
            raise BadImage(f"bad length {length} of marker FF{marker:02X} at byte {pos - 2}")
        segment = buf[pos + 2 : pos + length]
        pos += length
        if marker in _SOF_READ:
            if size is not None:
                raise BadImage("more than one frame header")
            size = _frame_size(segment)
        elif marker == _SOS:
            if size is None:
                raise BadImage("scan before the frame header")
            pos = _scan_end(buf, pos)
        elif marker in _SOF_OTHER:
            raise BadImage(f"unsupported JPEG frame type FF{marker:02X}")
        elif marker == _DNL:
            raise BadImage("DNL marker (height defined after the scan)")
        elif marker not in _SEGMENTS:
            raise BadImage(f"unknown marker FF{marker:02X} at byte {pos - length - 2}")


def _scan_end(buf: bytes, pos: int) -> int:
    """Where the entropy-coded data that starts at ``pos`` ends: the next marker that is neither a stuffed
    zero (FF00) nor a restart (FFD0-FFD7), at the first of the FF fill bytes that may precede it.

    ``find`` jumps from FF to FF in C: a 100 KB scan holds a few hundred of them (a regular expression
    that looks at every byte cost 0.5 ms an image)."""
    end = len(buf)
    while (pos := buf.find(b"\xff", pos)) >= 0:
        after = pos + 1
        while after < end and buf[after] == 0xFF:
            after += 1
        if after >= end:
            break
        if buf[after] != 0x00 and not 0xD0 <= buf[after] <= 0xD7:
            return pos
        pos = after + 1
    raise BadImage("truncated JPEG (no EOI marker)")


def _frame_size(segment: bytes) -> tuple[int, int]:
    """(width, height) from a SOF segment's body (precision, height, width, components...)."""
    if len(segment) < 6 or len(segment) != 6 + 3 * segment[5]:
        raise BadImage("malformed frame header")
    height, width = struct.unpack_from(">HH", segment, 1)
    if width == 0 or height == 0 or segment[5] == 0:
        raise BadImage(f"empty frame {width}x{height} (a zero height needs DNL, which is refused)")
    return width, height


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
    factor = _reduction(width, thumb_width)
    image = imdecode(data, _REDUCED[factor])
    if image is None:
        raise BadImage("OpenCV cannot decode it (or it is above OpenCV's pixel ceiling)")
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

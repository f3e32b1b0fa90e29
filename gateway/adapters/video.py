"""Frame bursts to browser-playable video with OpenCV, in a bounded thread pool (OpenCV releases the GIL).

The wheel has no H.264 encoder (FIELD_NOTES), so bursts become VP8 WebM, which browsers play. OpenCV's
VideoWriter only writes to a file: each clip is encoded into a file in a temporary folder of its own,
read back, and the folder removed.
"""

import asyncio
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from gateway.adapters.imaging import BadImage, jpeg_dimensions
from gateway.adapters.opencv import cv2, imdecode

FOURCC = "VP80"
CONTENT_TYPE = "video/webm"
MIN_DIMENSION = 16  # one VP8 macroblock


class BadClip(ValueError):
    """The frames cannot become a clip; the message says which frame and why."""


@dataclass(frozen=True)
class EncodedClip:
    """A WebM file's bytes and what is in it."""

    data: bytes
    frames: int
    width: int
    height: int


def frame_size(data: bytes | memoryview, max_dim: int) -> tuple[int, int]:
    """(width, height) of a JPEG frame as libjpeg reads it, without decoding; BadClip when unusable.
    The same check as alert snapshots (``imaging.jpeg_dimensions``)."""
    try:
        width, height = jpeg_dimensions(data)
    except BadImage as exc:
        raise BadClip(str(exc)) from None
    if not (MIN_DIMENSION <= width <= max_dim and MIN_DIMENSION <= height <= max_dim):
        raise BadClip(f"{width}x{height} is outside {MIN_DIMENSION}..{max_dim} pixels")
    return width, height


def encode_frames(frames: Sequence[bytes | memoryview], fps: float, max_dim: int) -> EncodedClip:
    """Decodes every JPEG (all must decode) and encodes them to VP8 WebM at ``fps``.

    The clip takes the first frame's size rounded down to even numbers (4:2:0 chroma halves both);
    other frames are resized to it, because a video stream has one size. Frames are decoded one at a
    time, so memory holds one decoded frame, not the whole burst.
    """
    if not frames:
        raise BadClip("no frames")
    first_w, first_h = frame_size(frames[0], max_dim)
    size = (first_w - first_w % 2, first_h - first_h % 2)
    with tempfile.TemporaryDirectory(prefix="camgate-clip-") as folder:
        path = Path(folder) / "clip.webm"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*FOURCC), fps, size)
        try:
            if not writer.isOpened():
                raise RuntimeError(f"OpenCV cannot open a {FOURCC} writer")  # a broken install, not the clip
            for number, data in enumerate(frames):
                try:
                    frame_size(data, max_dim)
                except BadClip as exc:
                    raise BadClip(f"frame {number}: {exc}") from None
                image = imdecode(data, cv2.IMREAD_COLOR)
                if image is None:
                    raise BadClip(f"frame {number} does not decode")
                if (image.shape[1], image.shape[0]) != size:
                    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
                writer.write(image)
        finally:
            writer.release()
        data = path.read_bytes()
    if not data:
        raise RuntimeError("OpenCV wrote an empty clip")
    return EncodedClip(data, len(frames), size[0], size[1])


class VideoWorkers:
    """A bounded pool for clip encoding, off the event loop (15 noisy 640x360 frames take ~0.5 s)."""

    def __init__(self, workers: int, *, max_dim: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="video")
        self._max_dim = max_dim

    async def encode(self, frames: Sequence[bytes | memoryview], fps: float) -> EncodedClip:
        """Encodes a burst in the pool; raises BadClip."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, encode_frames, frames, fps, self._max_dim)

    def close(self) -> None:
        """Stops the threads (an encoding in progress finishes first)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

"""Frame bursts to VP8 WebM with the real OpenCV: read back with OpenCV, frame by frame."""

import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from gateway.adapters.video import BadClip, VideoWorkers, encode_frames, frame_size
from tests.support.media import jpeg


def read_back(data: bytes) -> list[np.ndarray]:
    """Every frame OpenCV decodes from a WebM file's bytes."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip.webm"
        path.write_bytes(data)
        capture = cv2.VideoCapture(str(path))
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
        capture.release()
    return frames


def burst(count: int, width: int = 320, height: int = 180) -> list[bytes]:
    """Distinct frames: a bright bar moving across a dark field (so frames really differ)."""
    out = []
    for i in range(count):
        image = np.full((height, width, 3), 30, np.uint8)
        x = i * (width - 20) // max(1, count - 1)
        cv2.rectangle(image, (x, height // 4), (x + 20, 3 * height // 4), (240, 240, 240), -1)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        out.append(data.tobytes())
    return out


def test_a_burst_becomes_a_webm_with_every_frame_at_its_size() -> None:
    clip = encode_frames(burst(12, 320, 180), fps=5.0, max_dim=1920)
    assert clip.data.startswith(b"\x1a\x45\xdf\xa3")  # EBML: a WebM file
    assert (clip.frames, clip.width, clip.height) == (12, 320, 180)
    frames = read_back(clip.data)
    assert len(frames) == 12
    assert {f.shape for f in frames} == {(180, 320, 3)}
    # the bar moves: the first and last frames are bright at opposite ends
    first, last = frames[0], frames[-1]
    assert first[90, :40].mean() > first[90, -40:].mean() + 50
    assert last[90, -40:].mean() > last[90, :40].mean() + 50


def test_frames_of_another_size_are_resized_to_the_first_and_odd_sizes_made_even() -> None:
    frames = burst(3, 321, 181) + burst(2, 640, 360) + [jpeg(160, 90)]
    clip = encode_frames(frames, fps=4.0, max_dim=1920)
    assert (clip.frames, clip.width, clip.height) == (6, 320, 180)
    decoded = read_back(clip.data)
    assert len(decoded) == 6 and {f.shape for f in decoded} == {(180, 320, 3)}


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([], "no frames"),
        ([b"GIF89a" + b"\0" * 64], "not a JPEG"),
        ([jpeg(2000, 100)], "outside"),
        ([jpeg(8, 8)], "outside"),
    ],
)
def test_unusable_first_frames_are_refused(frames: list[bytes], message: str) -> None:
    with pytest.raises(BadClip, match=message):
        encode_frames(frames, fps=5.0, max_dim=1920)


def test_one_frame_that_does_not_decode_refuses_the_clip() -> None:
    good = burst(3)
    broken = good[1][:200] + b"\0" * 500 + b"\xff\xd9"  # a valid header, corrupt data
    with pytest.raises(BadClip, match="frame 1"):
        encode_frames([good[0], broken, good[2]], fps=5.0, max_dim=1920)


def test_frame_size_reads_the_header_only() -> None:
    assert frame_size(jpeg(640, 360), 1920) == (640, 360)
    with pytest.raises(BadClip):
        frame_size(jpeg(640, 360), 320)


async def test_workers_encode_off_the_loop() -> None:
    workers = VideoWorkers(1, max_dim=1920)
    try:
        clip = await workers.encode(burst(5), fps=5.0)
    finally:
        workers.close()
    assert len(read_back(clip.data)) == 5


def test_a_truncated_frame_is_refused_before_decoding() -> None:
    with pytest.raises(BadClip, match="truncated"):
        frame_size(jpeg(640, 360)[:-100], 1920)

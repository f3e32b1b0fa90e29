"""Issue 8, findings 2 and 9: hostile JPEGs and hostile clip uploads, through the real services on both
databases and the S3 server (clip parts are injected as the MQTT consumer hands them over).

- Finding 2: a JPEG whose markers include TEM/RST (no length field) showed a fake 64x64 frame header to
  the gateway's check while libjpeg read a 32000x32000 one. It must be refused before any decoding, as
  an alert and as a clip frame, and OpenCV itself must refuse frames above the gateway's ceiling.
- Finding 9: clip staging had no bounds (uploads in progress, staged bytes outside the quota), an
  assembly failing for an unexpected reason stayed staged forever, and assemblies ran without limit.
"""

import asyncio
import os
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from device_sim.registry import SimDevice
from gateway.adapters.db.tables import clip_parts, clip_uploads, dead_letters
from gateway.adapters.imaging import BadImage, jpeg_dimensions, make_snapshot
from gateway.adapters.video import BadClip, frame_size
from gateway.bootstrap import Services
from gateway.metrics import CLIPS_DROPPED
from gateway.services.ingest import Outcome
from gateway.wire import ClipFormat, ClipHeader, encode
from tests.integration.test_clip_ingest import Env, Start, _launcher, frames, parts
from tests.support.api import auth, new_user
from tests.support.media import alert
from tests.support.s3server import S3Bucket, S3Server
from tests.support.seed import import_fleet, seed_subscription

ROOT = Path(__file__).parents[2]


@pytest.fixture
async def start(
    database_url: str, tmp_path: Path, s3_server: S3Server, s3_bucket: S3Bucket
) -> AsyncIterator[Start]:
    """The clip ingest suite's app: one camera bound to a new account on the trial, an S3 region."""
    async with AsyncExitStack() as stack:
        yield await _launcher(stack, database_url, tmp_path, s3_server, s3_bucket)


def dropped(reason: str) -> float:
    return float(CLIPS_DROPPED.labels(reason)._value.get())


# --- finding 2: a frame header that only libjpeg sees -------------------------------------------------


def _segments(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """A plain JPEG's segments before its scan (marker, bytes with marker and length), and the rest."""
    pos, found = 2, []
    while data[pos + 1] != 0xDA:
        length = int.from_bytes(data[pos + 2 : pos + 4])
        found.append((data[pos + 1], data[pos : pos + 2 + length]))
        pos += 2 + length
    return found, data[pos:]


def bypass_jpeg(side: int = 32000) -> bytes:
    """A 66 KB JPEG that a length-for-every-marker walk reads as 64x64 and libjpeg as side x side.

    After SOI come TEM (FF01) and RST0 (FFD0), which carry no length. A naive walk takes the two bytes
    after TEM (FF D0) as TEM's length and jumps 65,488 bytes ahead, into a comment segment holding a
    genuine 64x64 frame header. libjpeg reads on from RST0 to the real frame header: side x side. The
    scan is a real 64x64 image's, so libjpeg decodes it and fills the rest of the huge frame.
    """
    ok, encoded = cv2.imencode(".jpg", np.full((64, 64, 3), 90, np.uint8))
    assert ok
    segments, scan = _segments(bytes(encoded))
    fake_sof = next(seg for marker, seg in segments if marker == 0xC0)
    tables = b"".join(seg for marker, seg in segments if marker in (0xC4, 0xDB))
    real_sof = bytearray(fake_sof)
    struct.pack_into(">HH", real_sof, 5, side, side)
    head = b"\xff\xd8" + b"\xff\x01" + b"\xff\xd0" + bytes(real_sof) + tables
    naive_lands_at = 4 + 0xFFD0  # TEM at 2, its "length" FF D0
    comment = b"\x00" * (naive_lands_at - len(head) - 4) + fake_sof + b"\x00" * 64
    return head + b"\xff\xfe" + (len(comment) + 2).to_bytes(2) + comment + scan


def test_the_header_check_reads_the_frame_libjpeg_reads() -> None:
    data = bypass_jpeg()
    assert 60_000 < len(data) < 70_000
    assert jpeg_dimensions(data) == (32000, 32000)
    began = time.perf_counter()
    with pytest.raises(BadImage, match="32000x32000"):
        make_snapshot(data, min_dim=64, max_dim=4096, thumb_width=320)
    with pytest.raises(BadClip, match="32000x32000"):
        frame_size(data, 1920)
    assert time.perf_counter() - began < 0.1, "refused from the header, before decoding"
    # The same construction at a decodable size: libjpeg (OpenCV) sees what the check reports.
    small = bypass_jpeg(600)
    decoded = cv2.imdecode(np.frombuffer(small, np.uint8), cv2.IMREAD_REDUCED_COLOR_8)
    assert jpeg_dimensions(small) == (600, 600) and decoded.shape[:2] == (75, 75)


async def test_a_libjpeg_only_frame_header_is_a_bad_image_dead_letter(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services
) -> None:
    cam = fleet[0]
    token = await new_user(client, mailbox, "jpeg@example.com")
    bound = await client.post(
        "/v1/devices", json={"serial": cam.serial, "code": cam.code}, headers=auth(token)
    )
    assert bound.status == 201
    began = time.perf_counter()
    outcome = await services.ingest.handle(f"cam/{cam.serial}/alert", alert("e-bomb", body=bypass_jpeg()))
    elapsed = time.perf_counter() - began
    assert outcome is Outcome.DEAD_LETTER
    async with services.engine.connect() as conn:
        (row,) = (await conn.execute(select(dead_letters.c.reason, dead_letters.c.detail))).all()
    assert row.reason == "bad_image" and "32000x32000" in row.detail, row.detail
    assert elapsed < 1.0, f"{elapsed:.2f} s: refused before decoding"


async def test_a_libjpeg_only_frame_header_is_a_bad_frame_at_staging(start: Start) -> None:
    env = await start()
    at = env.clock.now() - timedelta(minutes=1)
    bomb, good = bypass_jpeg(), frames(1)[0]
    before = dropped("bad_frame")
    sent = parts("e-bomb", [bomb, good], at=at)
    began = time.perf_counter()
    assert await env.send("e-bomb", sent[0]) is Outcome.DROPPED  # refused at its own part, not staged
    assert time.perf_counter() - began < 1.0
    assert dropped("bad_frame") == before + 1
    assert await env.count(clip_parts) == 0


def test_opencv_itself_refuses_frames_above_the_ceiling() -> None:
    """In a fresh process that imports the gateway's OpenCV (as the service does), ``cv2.imdecode``
    called directly, with no header check before it, refuses a frame above the ceiling; and an
    operator's lower ceiling in the environment wins."""
    script = textwrap.dedent(
        """
        import struct, sys
        import gateway.adapters.video  # the gateway's way in to OpenCV
        import cv2, numpy as np

        def claiming(width, height):
            ok, data = cv2.imencode(".jpg", np.full((16, 16, 3), 90, np.uint8))
            data = bytearray(data.tobytes())
            sof = data.find(b"\\xff\\xc0")
            struct.pack_into(">HH", data, sof + 5, height, width)
            return np.frombuffer(bytes(data), np.uint8)

        for width, height in map(eval, sys.argv[1:]):
            try:
                image = cv2.imdecode(claiming(width, height), cv2.IMREAD_GRAYSCALE)
            except cv2.error:
                image = None
            print("refused" if image is None else "decoded")
        """
    )

    def run(*sizes: str, **env: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-c", script, *sizes],
            cwd=ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    # 9000 px wide (over 8192), 6000x6000 (36 Mpx, over 32 Mi), 64x64 (fine)
    assert run("(9000, 16)", "(6000, 6000)", "(64, 64)") == ["refused", "refused", "decoded"]
    assert run("(64, 64)", OPENCV_IO_MAX_IMAGE_PIXELS="1000") == ["refused"]


# --- finding 9: clip staging bounds ----------------------------------------------------------------


async def _receiving(env: Env) -> int:
    async with env.services.engine.connect() as conn:
        query = select(func.count()).where(clip_uploads.c.status == "receiving")
        return int((await conn.execute(query)).scalar_one())


async def _reasons(env: Env) -> list[str]:
    async with env.services.engine.connect() as conn:
        query = select(clip_uploads.c.reason).where(clip_uploads.c.status == "dropped")
        return sorted(r.reason for r in await conn.execute(query))


async def test_clips_in_progress_are_bounded_per_camera(start: Start) -> None:
    env = await start(clips={"max_uploads_per_device": 2, "max_clip_bytes": 7 * 1024 * 1024})
    at = env.clock.now() - timedelta(minutes=1)
    frame = frames(1)[0]
    before = dropped("too_many_uploads")
    firsts = [parts(f"c-{i}", [frame, frame], at=at)[0] for i in range(5)]
    outcomes = await asyncio.gather(*(env.send(f"c-{i}", p) for i, p in enumerate(firsts)))
    assert sorted(outcomes) == sorted([Outcome.STAGED] * 2 + [Outcome.DROPPED] * 3)
    assert await _receiving(env) == 2 and await _reasons(env) == ["too_many_uploads"] * 3
    assert dropped("too_many_uploads") == before + 3

    # a clip that completes frees its place
    done = next(i for i, o in enumerate(outcomes) if o is Outcome.STAGED)
    assert await env.send(f"c-{done}", parts(f"c-{done}", [frame, frame], at=at)[1]) is Outcome.STORED
    assert await env.send("c-next", parts("c-next", [frame, frame], at=at)[0]) is Outcome.STAGED


async def test_clips_in_progress_are_bounded_per_account(start: Start) -> None:
    env = await start(clips={"max_uploads_per_device": 3, "max_uploads_per_account": 4})
    (second,) = await import_fleet(env.services, 1)
    bound = await env.client.post(
        "/v1/devices", json={"serial": second.serial, "code": second.code}, headers=auth(env.token)
    )
    assert bound.status == 201
    await seed_subscription(env.services, env.account_id, (await bound.json())["device"]["id"])
    at = env.clock.now()
    frame = frames(1)[0]
    sends: list[Any] = []
    for serial in (env.serial, second.serial):
        for i in range(3):
            clip_id = f"a-{serial[-4:]}-{i}"
            first = parts(clip_id, [frame, frame], at=at)[0]
            sends.append(env.services.ingest.handle(f"cam/{serial}/clip/{clip_id}", first))
    outcomes = await asyncio.gather(*sends)
    assert sorted(outcomes) == sorted([Outcome.STAGED] * 4 + [Outcome.DROPPED] * 2)
    assert await _receiving(env) == 4 and await _reasons(env) == ["too_many_uploads"] * 2


async def test_staged_bytes_count_against_the_quota_and_their_limit(start: Start) -> None:
    frame = frames(1)[0]
    size = len(frame)
    env = await start(
        clips={"max_clip_bytes": 2 * size, "max_staged_bytes_per_account": 2 * size + size // 2}
    )
    at = env.clock.now() - timedelta(minutes=1)

    async def used() -> int:
        answer = await env.client.get("/v1/storage/usage", headers=auth(env.token))
        assert answer.status == 200
        return int((await answer.json())["used_bytes"])

    assert await used() == 0
    assert await env.send("s-1", parts("s-1", [frame, frame], at=at)[0]) is Outcome.STAGED
    assert await used() == size, "staged parts take space in the account's storage"
    assert await env.send("s-2", parts("s-2", [frame, frame], at=at)[0]) is Outcome.STAGED
    before = dropped("staging_full")
    assert await env.send("s-3", parts("s-3", [frame, frame], at=at)[0]) is Outcome.DROPPED
    assert dropped("staging_full") == before + 1 and await _reasons(env) == ["staging_full"]
    assert await used() == 2 * size
    # a later part that would pass the account's staging limit drops its clip, and frees its bytes
    assert await env.send("s-1", parts("s-1", [frame, frame], at=at)[1]) is Outcome.DROPPED
    assert await used() == size and await env.count(clip_parts) == 1


async def test_a_frame_rate_below_one_is_a_bad_header(start: Start) -> None:
    env = await start()
    frame = frames(1)[0]
    header = ClipHeader.model_construct(
        type="clip",
        clip_id="e-slow",
        event_id="e-slow",
        captured_at=env.clock.now() - timedelta(minutes=1),
        format=ClipFormat.JPEG_FRAMES,
        part=0,
        parts=1,
        fps=0.0001,  # the encoder cannot open at this rate
        body_size=len(frame),
    )
    assert await env.send("e-slow", encode(header, frame)) is Outcome.DEAD_LETTER
    assert await env.dead_letter_reasons() == ["bad_header"]
    assert await env.count(clip_uploads) == 0 and await env.count(clip_parts) == 0


async def test_an_assembly_that_fails_unexpectedly_is_dropped_with_its_parts(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = await start()
    # OpenCV cannot open a writer for a codec it does not have: a failure no redelivery would cure.
    monkeypatch.setattr("gateway.adapters.video.FOURCC", "ZZZZ")
    at = env.clock.now() - timedelta(minutes=1)
    before = dropped("assembly_failed")
    outcomes = await env.send_all("e-fail", parts("e-fail", frames(3), at=at))
    assert outcomes == [Outcome.STAGED, Outcome.STAGED, Outcome.DROPPED]
    assert dropped("assembly_failed") == before + 1
    assert await _reasons(env) == ["assembly_failed"]
    assert await env.count(clip_parts) == 0 and await env.clip_rows() == []
    # its late redelivery is dropped unread
    assert await env.send("e-fail", parts("e-fail", frames(3), at=at)[2]) is Outcome.DROPPED


async def test_concurrent_assemblies_never_exceed_the_bound(
    start: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = await start(clips={"max_assemblies": 2, "video_workers": 4, "max_uploads_per_device": 8})
    folder = tmp_path / "encoding"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))  # each encoding has a folder of its own there
    at = env.clock.now() - timedelta(minutes=1)
    burst = [cv2.imencode(".jpg", f)[1].tobytes() for f in _noisy(8)]
    clips = {f"m-{i}": parts(f"m-{i}", burst, at=at) for i in range(5)}
    for clip_id, sent in clips.items():
        assert await env.send_all(clip_id, sent[:-1]) == [Outcome.STAGED] * 7

    peak = {"encoding": 0, "assembling": 0.0}
    finished = asyncio.Event()

    async def watch() -> None:
        while not finished.is_set():
            peak["encoding"] = max(peak["encoding"], len(list(folder.glob("camgate-clip-*"))))
            peak["assembling"] = max(
                peak["assembling"], REGISTRY.get_sample_value("camgate_clip_assemblies") or 0
            )
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    outcomes = await asyncio.gather(*(env.send(clip_id, sent[-1]) for clip_id, sent in clips.items()))
    finished.set()
    await watcher
    assert outcomes == [Outcome.STORED] * 5
    assert peak["encoding"] <= 2 and peak["assembling"] == 2, peak


def _noisy(count: int) -> list[np.ndarray[Any, Any]]:
    """640x360 frames of noise: slow enough to encode that assemblies overlap."""
    rng = np.random.default_rng(7)
    return [rng.integers(0, 255, (360, 640, 3), dtype=np.uint8) for _ in range(count)]

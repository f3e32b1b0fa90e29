"""Clip ingest through the real service on both databases, storing on the S3 server: parts are injected
as the MQTT consumer hands them over (``services.ingest.handle``). The same path over a real broker with a
device_sim camera is in test_clip_e2e.py."""

import asyncio
import copy
import os
import random
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import Row

from gateway.adapters.db.tables import clip_parts, clip_uploads, clips, dead_letters
from gateway.api.app import create_app
from gateway.bootstrap import Services, build
from gateway.domain.plans import DEFAULT_CONFIG
from gateway.metrics import CLIPS_DROPPED
from gateway.services.ingest import Outcome
from gateway.wire import ClipFormat, ClipHeader, clip_topic, encode
from storage import StorageUnavailable
from storage.keys import clip_key
from tests.integration.conftest import test_settings
from tests.support.api import auth, new_user, serve
from tests.support.clock import ManualClock
from tests.support.expired import real_now
from tests.support.media import jpeg
from tests.support.s3server import S3Bucket, S3Server, create_bucket
from tests.support.seed import import_fleet, seed_subscription

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MIB = 1024 * 1024
WEBM_MAGIC = b"\x1a\x45\xdf\xa3"
MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"


@dataclass
class Env:
    services: Services
    client: TestClient
    clock: ManualClock
    bucket: S3Bucket
    serial: str
    token: str
    account_id: str
    device_id: str
    admin: "S3Client"
    plan_start: datetime

    async def send(self, clip_id: str, payload: bytes) -> Outcome:
        return await self.services.ingest.handle(clip_topic(self.serial, clip_id), payload)

    async def send_all(self, clip_id: str, payloads: list[bytes]) -> list[Outcome]:
        return [await self.send(clip_id, p) for p in payloads]

    def keys(self) -> list[str]:
        """Every object in the bucket."""
        listing = self.admin.list_objects_v2(Bucket=self.bucket.name)
        return [o["Key"] for o in listing.get("Contents", [])]

    def tags(self, key: str) -> dict[str, str]:
        """An object's tags (S3's HEAD does not return them)."""
        answer = self.admin.get_object_tagging(Bucket=self.bucket.name, Key=key)
        return {t["Key"]: t["Value"] for t in answer["TagSet"]}

    async def count(self, table: Any) -> int:
        async with self.services.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())

    async def clip_rows(self) -> list[Row[Any]]:
        async with self.services.engine.connect() as conn:
            return list(await conn.execute(select(clips)))

    async def dead_letter_reasons(self) -> list[str]:
        async with self.services.engine.connect() as conn:
            rows = await conn.execute(select(dead_letters.c.reason).order_by(dead_letters.c.id))
            return [r.reason for r in rows]


Start = Callable[..., Awaitable[Env]]


async def _launcher(
    stack: AsyncExitStack, database_url: str, tmp_path: Path, server: S3Server, bucket: S3Bucket
) -> Start:
    admin = server.admin()
    stack.callback(admin.close)

    async def begin(
        *,
        plan: str | None = "trial",
        clock: ManualClock | None = None,
        store: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> Env:
        store_settings = bucket.settings(
            multipart_threshold_bytes=5 * MIB, multipart_part_bytes=5 * MIB, **(store or {})
        )
        values: dict[str, Any] = {
            "regions": {"sg": {"display_name": "Singapore", "store": store_settings.model_dump()}},
            "clips": {"max_clip_bytes": 7 * MIB},
        }
        settings = test_settings(database_url, tmp_path, **(values | overrides))
        clock = clock or ManualClock()
        services = await build(settings, stack, clock=clock)
        client = await serve(create_app(services), stack)
        (camera,) = await import_fleet(services, 1)
        token = await new_user(client, tmp_path / "mailbox", "clips@example.com")
        bound = await client.post(
            "/v1/devices", json={"serial": camera.serial, "code": camera.code}, headers=auth(token)
        )
        assert bound.status == 201
        account_id = (await (await client.get("/v1/me", headers=auth(token))).json())["id"]
        device_id = (await bound.json())["device"]["id"]
        plan_start = clock.now()
        if plan is not None:
            await seed_subscription(services, account_id, device_id, plan_id=plan)
        clock.advance(hours=1)  # captures a minute ago fall within the plan
        return Env(
            services, client, clock, bucket, camera.serial, token, account_id, device_id, admin, plan_start
        )

    return begin


@pytest.fixture
async def start(
    database_url: str, tmp_path: Path, s3_server: S3Server, s3_bucket: S3Bucket
) -> AsyncIterator[Start]:
    """Builds the app on an S3 region (multipart from 5 MiB, the least S3 allows), with one camera bound
    to a new account, on the trial since an hour ago unless ``plan=None``; ``clock`` and ``store``
    (settings overrides) optional."""
    async with AsyncExitStack() as stack:
        yield await _launcher(stack, database_url, tmp_path, s3_server, s3_bucket)


@pytest.fixture
async def start_private(
    database_url: str, tmp_path: Path, private_s3_server: S3Server
) -> AsyncIterator[Start]:
    """``start`` on an S3 server of the test's own, which it may stop and start again."""
    bucket = create_bucket(private_s3_server, versioned=False)
    async with AsyncExitStack() as stack:
        yield await _launcher(stack, database_url, tmp_path, private_s3_server, bucket)


def parts(
    clip_id: str,
    chunks: list[bytes],
    *,
    at: datetime,
    fmt: ClipFormat = ClipFormat.JPEG_FRAMES,
    fps: float | None = 5.0,
    **changes: Any,
) -> list[bytes]:
    """The envelopes of one clip, part 0 first."""
    return [
        encode(
            ClipHeader(
                clip_id=clip_id,
                event_id=clip_id,
                captured_at=at,
                format=fmt,
                part=i,
                parts=len(chunks),
                fps=fps,
                body_size=len(chunk),
                **changes,
            ),
            chunk,
        )
        for i, chunk in enumerate(chunks)
    ]


def frames(count: int, width: int = 320, height: int = 180) -> list[bytes]:
    """Distinct camera-like JPEG frames."""
    return [jpeg(width, height, seed=100 + i) for i in range(count)]


def frame_count(data: bytes) -> tuple[int, set[tuple[int, ...]]]:
    """How many frames OpenCV reads from a video file's bytes, and their shapes."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "clip.webm")
        Path(path).write_bytes(data)
        capture = cv2.VideoCapture(path)
        shapes: set[tuple[int, ...]] = set()
        count = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            count += 1
            shapes.add(frame.shape)
        capture.release()
    return count, shapes


def dropped(reason: str) -> float:
    return float(CLIPS_DROPPED.labels(reason)._value.get())


async def test_a_frame_burst_becomes_one_webm_object_kept_for_the_trial(start: Start) -> None:
    env = await start()
    captured = env.clock.now() - timedelta(minutes=1)
    outcomes = await env.send_all("e-burst-1", parts("e-burst-1", frames(12), at=captured))
    assert outcomes == [Outcome.STAGED] * 11 + [Outcome.STORED]

    (row,) = await env.clip_rows()
    assert (row.frames, row.width, row.height, row.plan_id) == (12, 320, 180, "trial")
    assert row.content_type == "video/webm" and row.region == "sg" and row.event_id == "e-burst-1"
    assert row.retain_until == captured + timedelta(days=7)  # the trial's 7 days of video, from capture
    assert row.key.startswith(f"acct/{env.account_id}/dev/{env.device_id}/clip/") and row.key.endswith(
        "/e-burst-1.webm"
    )
    assert env.keys() == [row.key]
    data = await env.services.stores.for_region("sg").get(row.key)
    assert data.startswith(WEBM_MAGIC) and row.bytes == len(data)
    assert frame_count(data) == (12, {(180, 320, 3)})
    assert env.tags(row.key) == {"kind": "clip", "retention-days": "7"}
    assert await env.count(clip_parts) == 0 and await env.count(clip_uploads) == 0, "staging emptied"

    # a part re-sent after the clip was stored changes nothing
    assert await env.send("e-burst-1", parts("e-burst-1", frames(12), at=captured)[3]) is Outcome.DUPLICATE
    assert await env.count(clip_uploads) == 0 and len(await env.clip_rows()) == 1


@pytest.mark.parametrize(
    ("fmt", "size", "multipart"),
    [(ClipFormat.WEBM, 300_000, False), (ClipFormat.MP4, 6 * MIB + 12_345, True)],
)
async def test_camera_encoded_video_is_stored_byte_identical(
    start: Start, fmt: ClipFormat, size: int, multipart: bool
) -> None:
    env = await start()
    head = WEBM_MAGIC if fmt is ClipFormat.WEBM else MP4_HEAD
    video = head + random.Random(size).randbytes(size - len(head))
    chunks = [video[i : i + 900_000] for i in range(0, len(video), 900_000)]
    at = env.clock.now() - timedelta(seconds=30)
    outcomes = await env.send_all("v-1", parts("v-1", chunks, at=at, fmt=fmt, fps=None))
    assert outcomes[-1] is Outcome.STORED and set(outcomes[:-1]) <= {Outcome.STAGED}

    (row,) = await env.clip_rows()
    ext = "webm" if fmt is ClipFormat.WEBM else "mp4"
    assert row.key.endswith(f"/v-1.{ext}") and row.content_type == f"video/{ext}"
    assert row.frames is None and row.bytes == len(video)
    store = env.services.stores.for_region("sg")
    assert await store.get(row.key) == video
    info = await store.head(row.key)
    assert info is not None and ("-" in info.etag) is multipart  # a multipart ETag ends in -<parts>


async def test_parts_out_of_order_and_redelivered_make_one_clip(start: Start) -> None:
    env = await start()
    at = env.clock.now() - timedelta(minutes=2)
    sent = parts("e-shuffle", frames(8), at=at)
    order = [5, 2, 2, 7, 0, 5, 3, 1, 6, 0, 4]  # part 4 completes the set
    outcomes = [await env.send("e-shuffle", sent[i]) for i in order]
    assert outcomes == [Outcome.STAGED] * 10 + [Outcome.STORED]
    for i in range(8):
        assert await env.send("e-shuffle", sent[i]) is Outcome.DUPLICATE
    (row,) = await env.clip_rows()
    assert env.keys() == [row.key] and row.frames == 8
    assert frame_count(await env.services.stores.for_region("sg").get(row.key))[0] == 8


async def test_without_a_video_plan_the_clip_is_dropped_unstaged(start: Start) -> None:
    env = await start(plan=None)  # the free plan: alerts and snapshots only
    before = dropped("no_video_plan")
    outcomes = await env.send_all("e-free", parts("e-free", frames(4), at=env.clock.now()))
    assert outcomes == [Outcome.DROPPED] * 4
    assert dropped("no_video_plan") == before + 1, "counted once per clip"
    assert await env.count(clip_parts) == 0 and env.keys() == [] and await env.clip_rows() == []
    assert await env.dead_letter_reasons() == [], "a drop is not a dead letter"


async def test_alerts_off_drops_clips_too(start: Start) -> None:
    env = await start()
    resp = await env.client.put(
        "/v1/settings/alerts", json={"message_alerts": False}, headers=auth(env.token)
    )
    assert resp.status == 200
    before = dropped("alerts_off")
    outcomes = await env.send_all("e-off", parts("e-off", frames(3), at=env.clock.now()))
    assert outcomes == [Outcome.DROPPED] * 3 and dropped("alerts_off") == before + 1
    assert await env.count(clip_parts) == 0 and env.keys() == []


async def test_retention_is_fixed_at_capture_and_a_late_upload_never_lives_longer(start: Start) -> None:
    env = await start()  # trial from T0 to T0 + 14 days, with 7 days of video
    t0 = env.plan_start
    trial_end = t0 + timedelta(days=14)
    await seed_subscription(env.services, env.account_id, env.device_id, plan_id="standard-30", at=trial_end)

    env.clock.advance(days=14)  # on standard-30 now; a clip captured on the trial's last day arrives late
    last_day = t0 + timedelta(days=13, hours=20)
    assert (await env.send_all("late-1", parts("late-1", frames(2), at=last_day)))[-1] is Outcome.STORED
    # "captured" 14 days ago: further back than the clock skew allowed (1 day), so it counts as captured a
    # day ago, under the trial then (issue 8: a camera clock set years back must not lose its captures)
    early = parts("late-2", frames(2), at=t0 + timedelta(hours=1))
    assert (await env.send_all("late-2", early))[-1] is Outcome.STORED
    # captured after the trial ended: the new plan's 30 days
    after_at = trial_end + timedelta(minutes=1)
    assert (await env.send_all("late-3", parts("late-3", frames(2), at=after_at)))[-1] is Outcome.STORED

    rows = {r.camera_clip_id: r for r in await env.clip_rows()}
    assert sorted(rows) == ["late-1", "late-2", "late-3"]
    assert rows["late-2"].retain_until == env.clock.now() - timedelta(days=1) + timedelta(days=7)
    assert rows["late-1"].retain_until == last_day + timedelta(days=7), "the trial's 7 days, not 30"
    assert rows["late-1"].plan_id == "trial" and env.tags(rows["late-1"].key)["retention-days"] == "7"
    assert rows["late-3"].retain_until == after_at + timedelta(days=30)
    assert rows["late-3"].plan_id == "standard-30"


async def test_a_clip_arriving_after_its_plan_ended_is_dropped(start: Start) -> None:
    env = await start()  # the trial alone, from T0 to T0 + 14 days
    t0 = env.plan_start
    # the last part arrives after the trial ended: the assembly decides again and drops it
    env.clock.advance(days=13, hours=21)  # T0 + 13 days 22 hours
    before = dropped("plan_ended")
    straddling = parts("end-1", frames(2), at=env.clock.now())
    assert await env.send("end-1", straddling[0]) is Outcome.STAGED
    env.clock.advance(hours=2, minutes=1)
    assert await env.send("end-1", straddling[1]) is Outcome.DROPPED
    assert dropped("plan_ended") == before + 1

    # captured during the trial, sent after it ended: dropped at the first part, nothing staged
    during = parts("end-2", frames(3), at=t0 + timedelta(days=13, hours=20))
    assert await env.send_all("end-2", during) == [Outcome.DROPPED] * 3
    assert dropped("plan_ended") == before + 2, "counted once per clip"
    async with env.services.engine.connect() as conn:
        reasons = dict(
            (await conn.execute(select(clip_uploads.c.camera_clip_id, clip_uploads.c.reason))).all()
        )
    assert reasons == {"end-1": "plan_ended", "end-2": "plan_ended"}
    assert await env.count(clip_parts) == 0 and env.keys() == [] and await env.clip_rows() == []
    assert await env.dead_letter_reasons() == [], "a drop is not a dead letter"


async def test_a_camera_clock_ahead_buys_no_longer_life(start: Start) -> None:
    env = await start()
    now = env.clock.now()
    future = parts("ahead-1", frames(2), at=now + timedelta(hours=5))
    assert (await env.send_all("ahead-1", future))[-1] is Outcome.STORED
    (row,) = await env.clip_rows()
    assert row.retain_until == now + timedelta(days=7)


async def test_parts_that_disagree_with_the_first_are_dead_letters(start: Start) -> None:
    env = await start()
    at = env.clock.now()
    good = parts("e-mix", frames(3), at=at)
    assert await env.send("e-mix", good[0]) is Outcome.STAGED
    cases = [
        parts("e-mix", frames(3), at=at, fps=10.0)[1],  # another frame rate
        parts("e-mix", frames(4), at=at)[1],  # another part count
        parts("e-mix", frames(3), at=at + timedelta(seconds=1))[1],  # another capture time
        parts("e-other", frames(3), at=at)[1],  # another clip's header on this clip's topic
    ]
    for payload in cases:
        assert await env.send("e-mix", payload) is Outcome.DEAD_LETTER
    assert await env.dead_letter_reasons() == ["clip_mismatch"] * 4
    assert await env.send_all("e-mix", good[1:]) == [Outcome.STAGED, Outcome.STORED]
    (row,) = await env.clip_rows()
    assert row.frames == 3


async def test_bad_messages_on_clip_topics_are_dead_letters(start: Start) -> None:
    env = await start()
    at = env.clock.now()
    cases = [
        (clip_topic(env.serial, "x-1"), b"not an envelope", "bad_magic"),
        (clip_topic(env.serial, "x-2"), b"CG\x01" + b"\0" * (1024 * 1024 + 10), "too_large"),
        (clip_topic(env.serial, "_x-3"), parts("x-3", frames(1), at=at)[0], "bad_topic"),
        (clip_topic("CGUNKNOWN0000", "x-4"), parts("x-4", frames(1), at=at)[0], "unknown_device"),
    ]
    for topic, payload, _ in cases:
        assert await env.services.ingest.handle(topic, payload) is Outcome.DEAD_LETTER
    assert await env.dead_letter_reasons() == [reason for _, _, reason in cases]

    # an unbound camera's clip is a dead letter too
    (spare,) = await import_fleet(env.services, 1)
    topic = clip_topic(spare.serial, "x-5")
    assert await env.services.ingest.handle(topic, parts("x-5", frames(1), at=at)[0]) is Outcome.DEAD_LETTER
    assert (await env.dead_letter_reasons())[-1] == "unbound_device"
    assert await env.count(clip_uploads) == 0 and env.keys() == []


async def test_limits_drop_the_clip_and_its_staged_parts(start: Start) -> None:
    env = await start(clips={"max_clip_bytes": 2 * MIB, "max_parts": 10, "max_frame_dimension": 640})
    at = env.clock.now()
    big = [MP4_HEAD + bytes(900_000)] + [bytes(900_000)] * 3  # 3.6 MB > 2 MiB
    before = dropped("clip_too_large")
    outcomes = await env.send_all("big", parts("big", big, at=at, fmt=ClipFormat.MP4, fps=None))
    assert outcomes == [Outcome.STAGED, Outcome.STAGED, Outcome.DROPPED, Outcome.DROPPED]
    assert dropped("clip_too_large") == before + 1
    assert await env.count(clip_parts) == 0, "the staged parts are deleted"

    many = parts("many", frames(11), at=at)
    assert await env.send("many", many[0]) is Outcome.DROPPED
    assert await env.send("many", many[1]) is Outcome.DROPPED  # follows the first part's decision
    oversize = parts("wide", [jpeg(320, 180), jpeg(1280, 720)], at=at)
    assert await env.send_all("wide", oversize) == [Outcome.STAGED, Outcome.DROPPED]
    junk = parts("junk", [jpeg(320, 180), b"GIF89a" + bytes(100)], at=at)
    assert await env.send_all("junk", junk) == [Outcome.STAGED, Outcome.DROPPED]
    garbage = parts("garbage", [b"not a webm at all"], at=at, fmt=ClipFormat.WEBM, fps=None)
    assert await env.send_all("garbage", garbage) == [Outcome.DROPPED]
    async with env.services.engine.connect() as conn:
        reasons = dict(
            (await conn.execute(select(clip_uploads.c.camera_clip_id, clip_uploads.c.reason))).all()
        )
    assert reasons == {
        "big": "clip_too_large",
        "many": "too_many_parts",
        "wide": "bad_frame",
        "junk": "bad_frame",
        "garbage": "bad_video",
    }
    assert await env.count(clip_parts) == 0 and env.keys() == [] and await env.clip_rows() == []


async def test_the_storage_quota_refuses_a_clip_that_would_exceed_it(start: Start) -> None:
    plans = copy.deepcopy(dict(DEFAULT_CONFIG))
    for plan in plans["plans"]:
        plan["storage_quota_mb"] = 1  # one device on the trial: a 1 MiB account quota
    env = await start(plans=plans)
    at = env.clock.now()
    video = WEBM_MAGIC + bytes(600_000)
    assert (await env.send_all("q-1", parts("q-1", [video], at=at, fmt=ClipFormat.WEBM, fps=None))) == [
        Outcome.STORED
    ]
    before = dropped("quota_exceeded")
    second = parts("q-2", [video[:300_000], video[300_000:]], at=at, fmt=ClipFormat.WEBM, fps=None)
    assert await env.send_all("q-2", second) == [Outcome.STAGED, Outcome.DROPPED]
    assert dropped("quota_exceeded") == before + 1
    assert await env.count(clip_parts) == 0 and len(env.keys()) == 1
    small = parts("q-3", [WEBM_MAGIC + bytes(100_000)], at=at, fmt=ClipFormat.WEBM, fps=None)
    assert await env.send_all("q-3", small) == [Outcome.STORED], "what still fits is stored"


async def test_an_incomplete_upload_is_abandoned_after_the_timeout(start: Start) -> None:
    env = await start(clips={"upload_timeout_s": 300, "max_parts": 3})
    at = env.clock.now()
    sent = parts("e-half", frames(3), at=at)
    assert await env.send_all("e-half", sent[:2]) == [Outcome.STAGED] * 2
    # Too many parts: dropped, its upload row kept. (Not a capture from before the camera was bound:
    # that is dropped without any row.)
    refused = parts("e-refused", frames(4), at=at)
    assert await env.send("e-refused", refused[0]) is Outcome.DROPPED
    ingest = env.services.clip_ingest

    env.clock.advance(seconds=299)
    assert await ingest.abandon_stale() == 0 and await env.count(clip_parts) == 2
    before = dropped("incomplete")
    env.clock.advance(seconds=2)
    assert await ingest.abandon_stale() == 2
    assert await env.count(clip_parts) == 0 and await env.count(clip_uploads) == 0
    assert dropped("incomplete") == before + 1
    async with env.services.engine.connect() as conn:
        (letter,) = list(await conn.execute(select(dead_letters)))
    assert letter.reason == "clip_incomplete" and letter.detail.startswith("2 of 3 parts")
    assert letter.topic == clip_topic(env.serial, "e-half") and letter.header["clip_id"] == "e-half"
    assert await ingest.abandon_stale() == 0

    # the camera's last part, arriving after that, starts over and waits for the rest
    assert await env.send("e-half", sent[2]) is Outcome.STAGED


async def test_uploads_time_out_when_idle_not_when_slow(start: Start) -> None:
    env = await start(clips={"upload_timeout_s": 300})
    at = env.clock.now()
    slow, idle = parts("e-slow", frames(3), at=at), parts("e-idle", frames(3), at=at)
    assert await env.send("e-slow", slow[0]) is Outcome.STAGED
    assert await env.send("e-idle", idle[0]) is Outcome.STAGED
    env.clock.advance(seconds=200)
    assert await env.send("e-slow", slow[1]) is Outcome.STAGED  # a new part: activity
    env.clock.advance(seconds=50)
    assert await env.send("e-idle", idle[0]) is Outcome.STAGED  # a redelivery only: no activity

    env.clock.advance(seconds=51)  # 301 s after the first parts, 101 s after e-slow's second
    ingest = env.services.clip_ingest
    assert await ingest.abandon_stale() == 1
    async with env.services.engine.connect() as conn:
        kept = list((await conn.execute(select(clip_uploads.c.camera_clip_id))).scalars())
    assert kept == ["e-slow"] and await env.count(clip_parts) == 2
    env.clock.advance(seconds=200)  # e-slow idle for 301 s
    assert await ingest.abandon_stale() == 1 and await env.count(clip_uploads) == 0
    async with env.services.engine.connect() as conn:
        details = list(
            (await conn.execute(select(dead_letters.c.detail).order_by(dead_letters.c.id))).scalars()
        )
    assert [d.split(" parts")[0] for d in details] == ["1 of 3", "2 of 3"]


async def test_a_complete_upload_whose_assembly_failed_waits_for_its_last_part(
    start_private: Start, private_s3_server: S3Server
) -> None:
    # Quick failures while the store is down: two attempts, short timeouts.
    fast = {"max_attempts": 2, "connect_timeout_s": 1, "read_timeout_s": 2}
    env = await start_private(clips={"upload_timeout_s": 300}, store=fast)
    sent = parts("e-outage", frames(3), at=env.clock.now())
    assert await env.send_all("e-outage", sent[:2]) == [Outcome.STAGED] * 2
    private_s3_server.stop()
    with pytest.raises(StorageUnavailable):  # not acknowledged: the broker redelivers it
        await env.send("e-outage", sent[2])
    assert await env.count(clip_parts) == 3, "every part staged, the last one too"

    env.clock.advance(seconds=301)
    assert await env.services.clip_ingest.abandon_stale() == 0
    assert await env.count(clip_uploads) == 1 and await env.count(clip_parts) == 3
    assert await env.dead_letter_reasons() == []

    private_s3_server.start()
    env.admin.create_bucket(Bucket=env.bucket.name)  # moto forgets its buckets when stopped
    assert await env.send("e-outage", sent[2]) is Outcome.STORED  # the redelivery
    (row,) = await env.clip_rows()
    assert env.keys() == [row.key] and row.frames == 3
    assert frame_count(await env.services.stores.for_region("sg").get(row.key))[0] == 3
    assert await env.count(clip_uploads) == 0 and await env.count(clip_parts) == 0


async def test_reconciliation_keeps_the_object_of_a_clip_being_received(start: Start) -> None:
    # The store stamps objects with the wall clock, and the orphan grace is measured on it.
    env = await start(clock=ManualClock(real_now()), sweep={"orphan_grace_s": 60})
    at = env.clock.now()
    video = WEBM_MAGIC + random.Random(11).randbytes(50_000)
    chunks = parts("v-left", [video[:20_000], video[20_000:]], at=at, fmt=ClipFormat.WEBM, fps=None)
    assert await env.send("v-left", chunks[0]) is Outcome.STAGED
    # left by an assembly that crashed before its commit; and an object no upload or record names
    store = env.services.stores.for_region("sg")
    key = clip_key(env.account_id, env.device_id, "v-left", at, "webm")
    stray = clip_key(env.account_id, env.device_id, "v-stray", at, "webm")
    for k in (key, stray):
        await store.put(k, video, content_type="video/webm")

    env.clock.advance(seconds=120)  # both past the grace
    report = await env.services.sweeper.reconcile("sg")
    assert report.ok and report.orphans == 1 and env.keys() == [key]

    assert await env.send("v-left", chunks[1]) is Outcome.STORED  # finds the object, commits its row
    (row,) = await env.clip_rows()
    assert row.key == key and await store.get(key) == video
    again = await env.services.sweeper.reconcile("sg")
    assert again.ok and (again.orphans, again.missing) == (0, 0) and env.keys() == [key]


async def test_concurrent_completions_make_one_object_and_one_row(start: Start) -> None:
    env = await start()
    at = env.clock.now()
    sent = parts("e-race", frames(6), at=at)
    assert await env.send_all("e-race", sent[:5]) == [Outcome.STAGED] * 5
    # the last part delivered three times at once (a redelivery racing the first delivery)
    outcomes = await asyncio.gather(*(env.send("e-race", sent[5]) for _ in range(3)))
    assert sorted(outcomes) == sorted([Outcome.STORED, Outcome.DUPLICATE, Outcome.DUPLICATE])
    (row,) = await env.clip_rows()
    assert env.keys() == [row.key] and row.frames == 6

    # an assembly that stored its object and crashed before its commit: the next one finds the object
    video = WEBM_MAGIC + random.Random(7).randbytes(50_000)
    chunks = parts("v-crash", [video[:20_000], video[20_000:]], at=at, fmt=ClipFormat.WEBM, fps=None)
    key = clip_key(env.account_id, env.device_id, "v-crash", at, "webm")
    await env.services.stores.for_region("sg").put(key, video, content_type="video/webm")
    assert await env.send_all("v-crash", chunks) == [Outcome.STAGED, Outcome.STORED]
    crashed = [r for r in await env.clip_rows() if r.camera_clip_id == "v-crash"]
    assert len(crashed) == 1 and crashed[0].key == key and crashed[0].bytes == len(video)
    assert sorted(env.keys()) == sorted([row.key, key])


async def test_the_service_abandons_stale_uploads_by_itself(start: Start) -> None:
    env = await start(clips={"upload_timeout_s": 1})  # the app's clean-up job then runs every second
    assert await env.send("e-alone", parts("e-alone", frames(2), at=env.clock.now())[0]) is Outcome.STAGED
    env.clock.advance(seconds=2)
    deadline = asyncio.get_running_loop().time() + 10
    while await env.count(clip_uploads):
        assert asyncio.get_running_loop().time() < deadline, "the periodic clean-up did not run"
        await asyncio.sleep(0.1)
    assert await env.dead_letter_reasons() == ["clip_incomplete"] and await env.count(clip_parts) == 0

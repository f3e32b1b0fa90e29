"""Clips are listed and played only while the device's plan is in force; after it ends they answer a
clear error even though they are still stored (the sweep removes them at their retain_until)."""

from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from device_sim.registry import SimDevice
from gateway.adapters.db.tables import clips
from gateway.api.app import create_app
from gateway.bootstrap import Services, build
from tests.integration.conftest import test_settings
from tests.support.api import auth, new_user, serve
from tests.support.clock import ManualClock
from tests.support.s3server import S3Bucket
from tests.support.seed import import_fleet, seed_clip, seed_subscription

VIDEO = bytes(range(256)) * 40  # 10,240 bytes


async def owner_with_device(client: TestClient, mailbox: Path, device: SimDevice) -> tuple[str, str, str]:
    """A new account with ``device`` bound: (token, account id, device id)."""
    token = await new_user(client, mailbox, "owner@example.com")
    bound = await client.post(
        "/v1/devices", json={"serial": device.serial, "code": device.code}, headers=auth(token)
    )
    account = await (await client.get("/v1/me", headers=auth(token))).json()
    return token, account["id"], (await bound.json())["device"]["id"]


async def test_clips_are_served_while_the_plan_is_in_force_and_refused_after(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services, clock: ManualClock
) -> None:
    token, account_id, device_id = await owner_with_device(client, mailbox, fleet[0])
    await seed_subscription(services, account_id, device_id)  # the 14-day trial, from now
    clip_id = await seed_clip(services, account_id, device_id, data=VIDEO)

    page = await (await client.get(f"/v1/clips?device_id={device_id}", headers=auth(token))).json()
    assert [c["id"] for c in page["items"]] == [clip_id]
    assert page["items"][0]["bytes"] == len(VIDEO) and page["items"][0]["plan_id"] == "trial"
    video = await client.get(f"/v1/clips/{clip_id}/video", headers=auth(token))
    assert video.status == 200 and video.content_type == "video/webm"
    assert await video.read() == VIDEO

    clock.advance(days=14)  # the trial's last instant has passed: the clip is still stored, not served
    for url in (f"/v1/clips/{clip_id}", f"/v1/clips/{clip_id}/video", f"/v1/clips?device_id={device_id}"):
        resp = await client.get(url, headers=auth(token))
        problem = await resp.json()
        assert resp.status == 402, url
        assert resp.content_type == "application/problem+json"
        assert problem["code"] == "plan_inactive" and device_id in str(problem)
    everything = await (await client.get("/v1/clips", headers=auth(token))).json()
    assert everything["items"] == []
    assert await services.stores.for_region("sg").head(await clip_key_of(services, clip_id)) is not None

    # Erasing one's own clip stays possible after the plan ended.
    assert (await client.delete(f"/v1/clips/{clip_id}", headers=auth(token))).status == 204
    assert (await client.delete(f"/v1/clips/{clip_id}", headers=auth(token))).status == 404


async def clip_key_of(services: Services, clip_id: str) -> str:
    """The object key a clip row names."""
    async with services.engine.connect() as conn:
        return str((await conn.execute(select(clips.c.key).where(clips.c.id == clip_id))).scalar_one())


async def test_a_device_without_a_plan_has_no_clips_to_show(
    client: TestClient, mailbox: Path, fleet: list[SimDevice]
) -> None:
    token, _, device_id = await owner_with_device(client, mailbox, fleet[0])
    resp = await client.get(f"/v1/clips?device_id={device_id}", headers=auth(token))
    assert resp.status == 402 and (await resp.json())["code"] == "plan_inactive"


async def test_video_ranges_for_seeking_in_a_browser(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services
) -> None:
    token, account_id, device_id = await owner_with_device(client, mailbox, fleet[0])
    await seed_subscription(services, account_id, device_id)
    clip_id = await seed_clip(services, account_id, device_id, data=VIDEO)
    url = f"/v1/clips/{clip_id}/video"

    part = await client.get(url, headers={**auth(token), "Range": "bytes=100-199"})
    assert part.status == 206 and part.headers["Content-Range"] == f"bytes 100-199/{len(VIDEO)}"
    assert await part.read() == VIDEO[100:200]
    tail = await client.get(url, headers={**auth(token), "Range": "bytes=-10"})
    assert tail.status == 206 and await tail.read() == VIDEO[-10:]
    open_ended = await client.get(url, headers={**auth(token), "Range": "bytes=10000-"})
    assert await open_ended.read() == VIDEO[10000:]
    beyond = await client.get(url, headers={**auth(token), "Range": f"bytes={len(VIDEO)}-"})
    assert beyond.status == 416 and (await beyond.json())["code"] == "range_not_satisfiable"
    assert beyond.headers["Content-Range"] == f"bytes */{len(VIDEO)}"


async def test_on_s3_the_video_is_a_short_lived_presigned_link(
    clock: ManualClock, database_url: str, tmp_path: Path, s3_bucket: S3Bucket
) -> None:
    settings = test_settings(
        database_url, tmp_path, regions={"sg": {"display_name": "Singapore", "store": s3_bucket.settings()}}
    )
    async with AsyncExitStack() as stack:
        services = await build(settings, stack, clock=clock)
        client = await serve(create_app(services), stack)
        (camera,) = await import_fleet(services, 1)
        token, account_id, device_id = await owner_with_device(client, tmp_path / "mailbox", camera)
        await seed_subscription(services, account_id, device_id)
        clip_id = await seed_clip(services, account_id, device_id, data=VIDEO)
        resp = await client.get(f"/v1/clips/{clip_id}/video", headers=auth(token), allow_redirects=False)
        assert resp.status == 307 and resp.headers["Cache-Control"] == "private, no-store"
        link = resp.headers["Location"]
        assert link.startswith(f"{s3_bucket.endpoint_url}/{s3_bucket.name}/") and "X-Amz-Expires=300" in link
        async with aiohttp.ClientSession() as http, http.get(link) as got:
            assert got.status == 200 and await got.read() == VIDEO


async def test_an_unknown_device_filter_answers_404(
    client: TestClient, mailbox: Path, fleet: list[SimDevice]
) -> None:
    token, _, _ = await owner_with_device(client, mailbox, fleet[0])
    resp = await client.get("/v1/clips?device_id=no-such-device", headers=auth(token))
    assert resp.status == 404 and (await resp.json())["code"] == "device_not_found"


async def test_clips_come_newest_first_in_cursor_pages(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services, clock: ManualClock
) -> None:
    token, account_id, device_id = await owner_with_device(client, mailbox, fleet[0])
    await seed_subscription(services, account_id, device_id)
    made = []
    for _ in range(3):
        made.append(await seed_clip(services, account_id, device_id))
        clock.advance(minutes=1)
    first = await (await client.get("/v1/clips?limit=2", headers=auth(token))).json()
    assert [c["id"] for c in first["items"]] == made[:0:-1]
    rest = await (
        await client.get(f"/v1/clips?limit=2&cursor={first['next_cursor']}", headers=auth(token))
    ).json()
    assert [c["id"] for c in rest["items"]] == made[:1] and rest["next_cursor"] is None
    bad = await client.get("/v1/clips?cursor=not-a-cursor", headers=auth(token))
    assert bad.status == 422 and (await bad.json())["code"] == "invalid_cursor"

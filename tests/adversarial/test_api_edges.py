"""Finding 13 of issue 8: API edges that answered 500. Every malformed request is a precise 4xx
problem+json, storage failures in the media routes are 503 ``storage_unavailable`` with Retry-After (404
when the object is gone), and /readyz reports each region's object store. Both databases; the local
store and a real S3 server (moto)."""

import asyncio
import base64
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from device_sim.registry import SimDevice
from gateway.adapters.db.tables import clips, events
from gateway.api.app import create_app
from gateway.bootstrap import Services, build
from gateway.services.ingest import Outcome
from tests.integration.conftest import test_settings
from tests.support.api import PASSWORD, auth, new_user, serve, sign_up_body
from tests.support.clock import ManualClock
from tests.support.media import alert
from tests.support.s3server import S3Server, create_bucket
from tests.support.seed import import_fleet, seed_clip, seed_subscription

VIDEO = bytes(range(256)) * 8


@dataclass
class Owner:
    """An account with a bound camera, one stored alert event and one clip under a trial plan."""

    client: TestClient
    services: Services
    token: str
    event_id: str
    clip_id: str

    async def get(self, path: str, **headers: str) -> Any:
        """GET with the owner's token; returns (status, headers, parsed body or None)."""
        resp = await self.client.get(path, headers={**auth(self.token), **headers}, allow_redirects=False)
        return resp


async def make_owner(client: TestClient, services: Services, mailbox: Path, camera: SimDevice) -> Owner:
    """Signs an owner up through the API, binds the camera, ingests one alert and seeds a clip."""
    token = await new_user(client, mailbox, "owner@example.com")
    bound = await client.post(
        "/v1/devices", json={"serial": camera.serial, "code": camera.code}, headers=auth(token)
    )
    assert bound.status == 201, await bound.text()
    device_id = (await bound.json())["device"]["id"]
    account_id = (await (await client.get("/v1/me", headers=auth(token))).json())["id"]
    assert await services.ingest.handle(f"cam/{camera.serial}/alert", alert("e-1")) is Outcome.STORED
    async with services.engine.connect() as conn:
        event_id = str((await conn.execute(select(events.c.id))).scalar_one())
    await seed_subscription(services, account_id, device_id)
    clip_id = await seed_clip(services, account_id, device_id, data=VIDEO)
    return Owner(client, services, token, event_id, clip_id)


@pytest.fixture
async def owner(client: TestClient, services: Services, mailbox: Path, fleet: list[SimDevice]) -> Owner:
    """An owner on the default (local folder) store."""
    return await make_owner(client, services, mailbox, fleet[0])


async def assert_problem(resp: Any, status: int, code: str) -> dict[str, Any]:
    """The response is a problem+json with this status and code."""
    text = await resp.text()
    assert resp.status == status, text
    assert resp.content_type == "application/problem+json", text
    problem: dict[str, Any] = await resp.json(content_type=None)
    assert problem["code"] == code and problem["status"] == status, problem
    return problem


async def media_keys(services: Services, owner: Owner) -> dict[str, str]:
    """Object keys of the owner's snapshot, thumbnail and clip video."""
    async with services.engine.connect() as conn:
        event = (await conn.execute(select(events).where(events.c.id == owner.event_id))).one()
        clip_key = (await conn.execute(select(clips.c.key).where(clips.c.id == owner.clip_id))).scalar_one()
    return {"snapshot": event.snapshot_key, "thumbnail": event.thumbnail_key, "video": clip_key}


def media_paths(owner: Owner) -> dict[str, str]:
    """The API paths of the three media routes."""
    return {
        "snapshot": f"/v1/events/{owner.event_id}/snapshot",
        "thumbnail": f"/v1/events/{owner.event_id}/thumbnail",
        "video": f"/v1/clips/{owner.clip_id}/video",
    }


# --- bodies ---------------------------------------------------------------------------------------


async def test_a_deeply_nested_json_body_is_a_400(client: TestClient) -> None:
    # 30,000 levels fit the 64 KiB body limit; json.loads raised RecursionError (a 500).
    body = '{"identifier": ' + "[" * 30_000 + "]" * 30_000 + ', "password": "x"}'
    resp = await client.post("/v1/sessions", data=body, headers={"Content-Type": "application/json"})
    await assert_problem(resp, 400, "malformed_json")


async def test_a_number_with_thousands_of_digits_is_a_400(client: TestClient) -> None:
    # Python refuses to convert more than 4,300 digits with a ValueError that is not a JSONDecodeError.
    body = '{"identifier": "a@example.com", "password": ' + "7" * 5_000 + "}"
    resp = await client.post("/v1/sessions", data=body, headers={"Content-Type": "application/json"})
    await assert_problem(resp, 400, "malformed_json")


@pytest.mark.parametrize("name", ["a\u0000b", "tab\there", "bell\u0007", "del\u007f", "c1\u0085"])
async def test_control_characters_in_body_strings_are_a_422(owner: Owner, name: str) -> None:
    # PostgreSQL refuses NUL in text (DataError, a 500); SQLite stored it, and the other control
    # characters, as given. (Lone surrogates were refused by pydantic already.)
    resp = await owner.client.patch("/v1/me", json={"display_name": name}, headers=auth(owner.token))
    problem = await assert_problem(resp, 422, "validation_failed")
    assert problem["errors"][0]["field"] == "display_name"
    me = await (await owner.client.get("/v1/me", headers=auth(owner.token))).json()
    assert me["display_name"] == ""


async def test_a_nul_in_a_sign_up_identifier_is_a_422(client: TestClient) -> None:
    resp = await client.post("/v1/accounts", json=sign_up_body("x\u0000@example.com"))
    await assert_problem(resp, 422, "validation_failed")


async def test_a_body_whose_content_encoding_lies_is_a_400(client: TestClient) -> None:
    # aiohttp's inflate failure (ContentEncodingError) escaped request.read() as a 500.
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    resp = await client.post("/v1/sessions", data=b'{"identifier": "a@example.com"}', headers=headers)
    await assert_problem(resp, 400, "malformed_body")


@pytest.mark.parametrize("host", ["a..example.com", "x" * 64 + ".example.com", "xn--.example.com"])
async def test_a_push_target_host_that_no_dns_name_can_spell_is_a_422(owner: Owner, host: str) -> None:
    # An empty or over-long label made the resolver's IDNA encoding raise UnicodeError (a 500).
    body = {"kind": "webhook", "url": f"https://{host}/hook"}
    resp = await owner.client.post("/v1/push-targets", json=body, headers=auth(owner.token))
    problem = await assert_problem(resp, 422, "validation_failed")
    assert problem["errors"][0]["field"] == "url"


# --- query and path parameters --------------------------------------------------------------------


@pytest.mark.parametrize(
    "cursor",
    [
        base64.urlsafe_b64encode(b"2026-01-01T00:00:00|x").decode(),  # a naive time: refused by the bind
        base64.urlsafe_b64encode(b"0001-01-01T00:00:00+14:00|x").decode(),  # overflows in UTC
        base64.urlsafe_b64encode(b"2026-01-01T00:00:00+00:00|a\x00b").decode(),  # NUL: PostgreSQL refuses
    ],
)
@pytest.mark.parametrize("path", ["/v1/events", "/v1/clips"])
async def test_a_malformed_cursor_is_a_422(owner: Owner, path: str, cursor: str) -> None:
    resp = await owner.get(f"{path}?cursor={cursor}")
    await assert_problem(resp, 422, "invalid_cursor")


@pytest.mark.parametrize("cursor", ["9" * 30, "\u0663"])
async def test_an_audit_cursor_that_is_no_64_bit_id_is_a_422(owner: Owner, cursor: str) -> None:
    # 30 digits overflowed the database driver (a 500).
    await assert_problem(await owner.get(f"/v1/audit?cursor={cursor}"), 422, "invalid_cursor")


@pytest.mark.parametrize("since", ["0001-01-01T00:00:00%2B14:00", "9999-12-31T23:59:59-14:00"])
@pytest.mark.parametrize("path", ["/v1/events", "/v1/clips"])
async def test_a_since_outside_the_utc_range_is_a_422(owner: Owner, path: str, since: str) -> None:
    for name in ("since", "until"):
        resp = await owner.get(f"{path}?{name}={since}")
        problem = await assert_problem(resp, 422, "validation_failed")
        assert problem["errors"][0]["field"] == name


@pytest.mark.parametrize("path", ["/v1/events?device_id=%00", "/v1/clips?device_id=a%00b"])
async def test_a_nul_in_a_query_parameter_is_a_422(owner: Owner, path: str) -> None:
    resp = await owner.get(path)
    await assert_problem(resp, 422, "validation_failed")


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/v1/devices/%00", "device_not_found"),
        ("/v1/events/a%00b", "event_not_found"),
        ("/v1/clips/%00/video", "clip_not_found"),
        ("/v1/subscriptions/%00/refund-quote", "subscription_not_found"),
    ],
)
async def test_a_path_id_that_is_not_a_uuid_is_a_404(owner: Owner, path: str, code: str) -> None:
    await assert_problem(await owner.get(path), 404, code)


# --- headers --------------------------------------------------------------------------------------


async def test_a_range_with_thousands_of_digits_is_a_416(owner: Owner) -> None:
    # int() refuses more than 4,300 digits with a ValueError (a 500).
    resp = await owner.get(f"/v1/clips/{owner.clip_id}/video", Range="bytes=" + "9" * 5_000 + "-")
    await assert_problem(resp, 416, "range_not_satisfiable")
    assert resp.headers["Content-Range"] == f"bytes */{len(VIDEO)}"
    huge_end = await owner.get(f"/v1/clips/{owner.clip_id}/video", Range="bytes=10-" + "9" * 5_000)
    assert huge_end.status == 206 and await huge_end.read() == VIDEO[10:]
    huge_suffix = await owner.get(f"/v1/clips/{owner.clip_id}/video", Range="bytes=-" + "9" * 5_000)
    assert huge_suffix.status == 206 and await huge_suffix.read() == VIDEO


# --- media on the local store ---------------------------------------------------------------------


@pytest.mark.parametrize("which", ["snapshot", "thumbnail", "video"])
async def test_an_object_deleted_under_its_row_is_a_404(owner: Owner, services: Services, which: str) -> None:
    key = (await media_keys(services, owner))[which]
    report = await services.stores.for_region("sg").delete_many([key])
    assert report.ok
    await assert_problem(await owner.get(media_paths(owner)[which]), 404, "media_not_found")


@pytest.mark.parametrize("which", ["snapshot", "thumbnail", "video"])
async def test_a_local_store_failure_in_a_media_route_is_a_503_with_retry_after(
    owner: Owner, services: Services, which: str
) -> None:
    # A symbolic link to itself makes every read fail with ELOOP: an I/O error like a failing disk's.
    path = services.settings.data_dir / "media" / "sg" / (await media_keys(services, owner))[which]
    path.unlink()
    path.symlink_to(path)
    resp = await owner.get(media_paths(owner)[which])
    problem = await assert_problem(resp, 503, "storage_unavailable")
    assert int(resp.headers["Retry-After"]) > 0 and problem["retry_after"] == int(resp.headers["Retry-After"])


# --- media and readiness on S3 --------------------------------------------------------------------


@dataclass
class S3App:
    owner: Owner
    server: S3Server
    bucket: str


@pytest.fixture
async def s3_app(
    database_url: str, tmp_path: Path, clock: ManualClock, private_s3_server: S3Server
) -> AsyncIterator[S3App]:
    """The app with region sg on a bucket of a private moto server (free to be stopped), one owner."""
    bucket = create_bucket(private_s3_server, versioned=False)
    store = bucket.settings(max_attempts=1, connect_timeout_s=1.0, read_timeout_s=2.0)
    settings = test_settings(
        database_url, tmp_path, regions={"sg": {"display_name": "Singapore", "store": store}}
    )
    async with AsyncExitStack() as stack:
        services = await build(settings, stack, clock=clock)
        client = await serve(create_app(services), stack)
        (camera,) = await import_fleet(services, 1)
        owner = await make_owner(client, services, tmp_path / "mailbox", camera)
        yield S3App(owner, private_s3_server, bucket.name)


@pytest.mark.parametrize("which", ["snapshot", "thumbnail", "video"])
async def test_media_on_a_stopped_s3_is_a_503_not_a_dead_link(s3_app: S3App, which: str) -> None:
    owner = s3_app.owner
    ok = await owner.get(media_paths(owner)[which])
    assert ok.status == 307
    s3_app.server.stop()
    resp = await owner.get(media_paths(owner)[which])
    await assert_problem(resp, 503, "storage_unavailable")
    assert int(resp.headers["Retry-After"]) > 0


@pytest.mark.parametrize("which", ["snapshot", "thumbnail", "video"])
async def test_an_s3_object_deleted_under_its_row_is_a_404_not_a_dead_link(s3_app: S3App, which: str) -> None:
    owner = s3_app.owner
    key = (await media_keys(owner.services, owner))[which]
    admin = s3_app.server.admin()
    try:
        admin.delete_object(Bucket=s3_app.bucket, Key=key)
    finally:
        admin.close()
    await assert_problem(await owner.get(media_paths(owner)[which]), 404, "media_not_found")


async def test_readyz_fails_while_a_region_store_is_down(s3_app: S3App) -> None:
    client = s3_app.owner.client
    ready = await client.get("/readyz")
    assert ready.status == 200 and (await ready.json())["checks"]["store:sg"] == "ok"
    s3_app.server.stop()
    assert (await client.get("/readyz")).status == 200  # the answer of a moment ago is remembered
    await asyncio.sleep(5.1)  # past the few seconds a readiness answer is remembered
    down = await client.get("/readyz")
    body = await down.json()
    assert down.status == 503 and body["status"] == "unavailable", body
    assert body["checks"]["store:sg"] == "StorageUnavailable" and body["checks"]["database"] == "ok"


class Tarpit:
    """A TCP listener that accepts and never answers: an S3 endpoint that hangs. Counts connections."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = int(self._sock.getsockname()[1])
        self.connections = 0
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            self._held.append(conn)

    def close(self) -> None:
        """Stops listening and drops every held connection (again: nothing happens)."""
        self._sock.close()
        for conn in self._held:
            with closing(conn):
                pass
        self._held.clear()


@pytest.fixture
def tarpit() -> Iterator[Tarpit]:
    """A hanging endpoint, closed after the test."""
    pit = Tarpit()
    yield pit
    pit.close()


async def test_readyz_answers_fast_and_cannot_hammer_a_hanging_store(
    database_url: str, tmp_path: Path, clock: ManualClock, tarpit: Tarpit
) -> None:
    store = {
        "kind": "s3",
        "bucket": "camgate-tarpit",
        "endpoint_url": f"http://127.0.0.1:{tarpit.port}",
        "access_key_id": "testing",
        "secret_access_key": "testing",
        "path_style": True,
        "max_attempts": 1,
        "connect_timeout_s": 1.0,
        "read_timeout_s": 10.0,  # without the check's own timeout, /readyz would wait this long
    }
    settings = test_settings(
        database_url, tmp_path, regions={"sg": {"display_name": "Singapore", "store": store}}
    )
    async with AsyncExitStack() as stack:
        services = await build(settings, stack, clock=clock)
        client = await serve(create_app(services), stack)
        started = time.monotonic()
        answers = await asyncio.gather(*(client.get("/readyz") for _ in range(20)))
        for _ in range(20):
            answers.append(await client.get("/readyz"))
        elapsed = time.monotonic() - started
        tarpit.close()  # ends the hung HEAD, so that the store's threads stop at once
        assert {a.status for a in answers} == {503}
        assert {(await a.json())["checks"]["store:sg"] for a in answers} == {"timeout"}
        assert elapsed < 6, elapsed  # the check's 2 s timeout, not the store's 10 s
        assert tarpit.connections <= 1, tarpit.connections  # 40 requests, one check in flight


async def _raw(client: TestClient, request: bytes) -> tuple[int, bytes]:
    """Sends bytes no HTTP client library would (undecodable header values) and reads the answer."""
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(request)
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def test_an_undecodable_bearer_token_is_a_401(client: TestClient) -> None:
    status, body = await _raw(
        client,
        b"GET /v1/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer cg_\xff\r\nConnection: close\r\n\r\n",
    )
    assert status == 401 and b'"invalid_token"' in body


async def test_an_undecodable_user_agent_does_not_break_log_in(client: TestClient, mailbox: Path) -> None:
    await new_user(client, mailbox, "agent@example.com")
    body = b'{"identifier": "agent@example.com", "password": "%s"}' % PASSWORD.encode()
    head = b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nUser-Agent: x\xff\x85y\r\nContent-Type: application/json\r\n"
    status, answer = await _raw(
        client, head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
    )
    assert status == 201, answer
    token = json.loads(answer)["token"]
    listed = (await (await client.get("/v1/sessions", headers=auth(token))).json())["items"]
    assert "x\ufffd\ufffdy" in [s["user_agent"] for s in listed]  # stored, cleaned


async def test_a_forwarded_address_that_is_no_address_is_not_believed(
    database_url: str, tmp_path: Path, mailbox: Path
) -> None:
    settings = test_settings(database_url, tmp_path, http={"trusted_proxies": ["127.0.0.0/8"]})
    async with AsyncExitStack() as stack:
        services = await build(settings, stack, clock=ManualClock())
        client = await serve(create_app(services), stack)
        body = b'{"identifier": "nobody@example.com", "password": "wrong password here"}'
        head = b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.1, \xffjunk\r\n"
        head += b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(
            body
        )
        status, answer = await _raw(client, head + body)
        assert status == 401, answer

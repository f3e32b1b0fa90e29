"""Binding outcomes, enumeration resistance and lockout, through the real app on both databases."""

import asyncio
import statistics
import time
from pathlib import Path

from aiohttp.test_utils import TestClient

from device_sim.registry import SimDevice
from tests.support.api import auth, new_user
from tests.support.clock import ManualClock


async def bind(client: TestClient, token: str, serial: str, code: str) -> tuple[int, dict[str, object]]:
    resp = await client.post("/v1/devices", json={"serial": serial, "code": code}, headers=auth(token))
    return resp.status, await resp.json()


def wrong(code: str) -> str:
    return "AAAAAA" if code != "AAAAAA" else "BBBBBB"


async def test_every_binding_outcome(client: TestClient, mailbox: Path, fleet: list[SimDevice]) -> None:
    cam = fleet[0]
    ana = await new_user(client, mailbox, "ana@example.com")
    bob = await new_user(client, mailbox, "bob@example.com")

    status, body = await bind(client, ana, cam.serial, cam.code)
    assert status == 201 and body["outcome"] == "bound"
    device_id = body["device"]["id"]  # type: ignore[index]

    status, body = await bind(client, ana, cam.serial.lower(), cam.code.lower())  # as typed off a label
    assert status == 200 and body["outcome"] == "already_yours" and body["device"]["id"] == device_id  # type: ignore[index]

    status, body = await bind(client, bob, cam.serial, cam.code)
    assert status == 409 and body["code"] == "device_bound_elsewhere"

    status, body = await bind(client, bob, cam.serial, wrong(cam.code))
    assert status == 422 and body["code"] == "invalid_serial_or_code"

    listed = await (await client.get("/v1/devices", headers=auth(ana))).json()
    assert [d["serial"] for d in listed["items"]] == [cam.serial]

    # unbind: the device becomes free and another account can bind it
    assert (await client.delete(f"/v1/devices/{device_id}", headers=auth(bob))).status == 404
    assert (await client.delete(f"/v1/devices/{device_id}", headers=auth(ana))).status == 204
    assert (await (await client.get("/v1/devices", headers=auth(ana))).json())["items"] == []
    status, body = await bind(client, bob, cam.serial, cam.code)
    assert status == 201 and body["device"]["id"] == device_id  # type: ignore[index]

    actions = [
        e["action"] for e in (await (await client.get("/v1/audit", headers=auth(ana))).json())["items"]
    ]
    assert {"device.bound", "device.unbound"} <= set(actions)
    bob_actions = [
        e["action"] for e in (await (await client.get("/v1/audit", headers=auth(bob))).json())["items"]
    ]
    assert "device.bind_failed" in bob_actions and "device.unbound" not in bob_actions


async def test_unknown_serial_and_wrong_code_are_indistinguishable(
    client: TestClient, mailbox: Path, fleet: list[SimDevice]
) -> None:
    token = await new_user(client, mailbox, "eve@example.com")
    known, unknown = fleet[1].serial, "CGZZZZZZZZZZ"
    timings: dict[str, list[float]] = {known: [], unknown: []}
    answers = {}
    for _ in range(4):  # stays under the lockout of 5
        for serial in (known, unknown):
            started = time.perf_counter()
            resp = await client.post(
                "/v1/devices", json={"serial": serial, "code": "AAAAAA"}, headers=auth(token)
            )
            timings[serial].append(time.perf_counter() - started)
            answers[serial] = (resp.status, await resp.read(), resp.headers.get("Content-Type"))
    assert answers[known] == answers[unknown]
    gap = abs(statistics.median(timings[known]) - statistics.median(timings[unknown]))
    assert gap < 0.02, f"median latency differs by {gap * 1000:.1f} ms"
    # and both keep failing identically up to and into the lockout
    for serial in (known, unknown):
        await client.post("/v1/devices", json={"serial": serial, "code": "AAAAAA"}, headers=auth(token))
    locked = {}
    for serial in (known, unknown):
        resp = await client.post(
            "/v1/devices", json={"serial": serial, "code": "AAAAAA"}, headers=auth(token)
        )
        locked[serial] = (resp.status, await resp.read())
    assert locked[known] == locked[unknown] and locked[known][0] == 423


async def test_lockout_is_per_serial_whatever_the_account(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], clock: ManualClock
) -> None:
    cam = fleet[2]
    attackers = [await new_user(client, mailbox, f"mal{i}@example.com") for i in range(5)]
    for token in attackers:  # one wrong try from each of five accounts
        status, _ = await bind(client, token, cam.serial, wrong(cam.code))
        assert status == 422
    owner = await new_user(client, mailbox, "owner@example.com")
    resp = await client.post(
        "/v1/devices", json={"serial": cam.serial, "code": cam.code}, headers=auth(owner)
    )
    assert resp.status == 423 and (await resp.json())["code"] == "device_locked"
    assert 0 < int(resp.headers["Retry-After"]) <= 3600
    # other serials are not affected
    status, _ = await bind(client, owner, fleet[3].serial, fleet[3].code)
    assert status == 201
    clock.advance(minutes=61)
    status, body = await bind(client, owner, cam.serial, cam.code)
    assert status == 201, body
    locked_audit = [e for e in (await (await client.get("/v1/audit", headers=auth(owner))).json())["items"]]
    assert any(e["action"] == "device.bind_locked" for e in locked_audit)


async def test_per_account_attempt_limit(client: TestClient, mailbox: Path, fleet: list[SimDevice]) -> None:
    token = await new_user(client, mailbox, "spray@example.com")
    # spraying guesses over many serials (never 5 on one) still hits the account limit of 20
    for i in range(20):
        status, _ = await bind(client, token, f"CGSPRAY{i:05d}", "AAAAAA")
        assert status == 422
    status, body = await bind(client, token, fleet[4].serial, fleet[4].code)
    assert status == 429 and body["code"] == "bind_rate_limited"


async def test_concurrent_binds_bind_once(client: TestClient, mailbox: Path, fleet: list[SimDevice]) -> None:
    cam = fleet[5]
    tokens = [await new_user(client, mailbox, f"race{i}@example.com") for i in range(4)]
    results = await asyncio.gather(*(bind(client, t, cam.serial, cam.code) for t in tokens))
    statuses = sorted(status for status, _ in results)
    assert statuses == [201, 409, 409, 409], results


async def test_rename_and_detail(client: TestClient, mailbox: Path, fleet: list[SimDevice]) -> None:
    token = await new_user(client, mailbox, "ren@example.com")
    _, body = await bind(client, token, fleet[6].serial, fleet[6].code)
    device_id = body["device"]["id"]  # type: ignore[index]
    resp = await client.patch(f"/v1/devices/{device_id}", json={"name": "Porch"}, headers=auth(token))
    assert resp.status == 200 and (await resp.json())["name"] == "Porch"
    detail = await (await client.get(f"/v1/devices/{device_id}", headers=auth(token))).json()
    assert detail["name"] == "Porch" and detail["serial"] == fleet[6].serial

"""Walks every operation of the OpenAPI document as a second account, with the first account's ids:
nothing of the first account may be seen or changed, and its ids answer 404."""

import json
import re
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from device_sim.registry import SimDevice
from gateway.bootstrap import Services
from tests.support.api import auth, new_user
from tests.support.media import alert
from tests.support.seed import seed_clip, seed_subscription

# A valid body for each request schema, so each operation gets past validation to the ownership check.
BODIES: dict[str, dict[str, Any]] = {
    "BindIn": {"serial": "CGNOTMINE000", "code": "AAAAAA"},
    "DevicePatch": {"name": "stolen"},
    "ProfilePatch": {"display_name": "renamed"},
    "SignUpIn": {
        "identifier": "walker@example.com",
        "password": "a long passphrase",
        "birth_date": "1990-01-01",
        "region": "sg",
    },
    "ConfirmIn": {"identifier": "walker@example.com", "code": "000000"},
    "IdentifierIn": {"identifier": "walker@example.com"},
    "LoginIn": {"identifier": "walker@example.com", "password": "a long passphrase"},
    "PushTargetIn": {"kind": "webhook", "url": "https://1.1.1.1/mallory-hook"},  # a literal: no DNS
    "AccountAlertsIn": {"message_alerts": False},
    "DeviceAlertsIn": {"muted": True, "snooze_minutes": 60},
    "PurchaseIn": {"plan_id": "basic-7", "billing": "annual"},
    "TransferIn": {"device_id": "00000000-0000-4000-8000-000000000000"},
}
NOT_OWNED = {"/v1/sessions/current"}  # acts on the caller's own session by definition


async def test_second_account_sees_nothing_of_the_first(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services
) -> None:
    alice = await new_user(client, mailbox, "alice@example.com")
    bind = await client.post(
        "/v1/devices",
        json={"serial": fleet[0].serial, "code": fleet[0].code, "name": "Alice porch"},
        headers=auth(alice),
    )
    device = (await bind.json())["device"]
    me = await (await client.get("/v1/me", headers=auth(alice))).json()
    session_id = (await (await client.get("/v1/sessions", headers=auth(alice))).json())["items"][0]["id"]
    target = await client.post(
        "/v1/push-targets", json={"kind": "webhook", "url": "https://8.8.8.8/alice-hook"}, headers=auth(alice)
    )
    target_id = (await target.json())["id"]
    await services.ingest.handle(f"cam/{fleet[0].serial}/alert", alert("alice-event-1"))
    event_id = (await (await client.get("/v1/events", headers=auth(alice))).json())["items"][0]["id"]
    device = await (await client.get(f"/v1/devices/{device['id']}", headers=auth(alice))).json()
    subscription_id = await seed_subscription(services, me["id"], device["id"])
    clip_id = await seed_clip(services, me["id"], device["id"])
    ids = {
        "device_id": device["id"],
        "session_id": session_id,
        "target_id": target_id,
        "event_id": event_id,
        "clip_id": clip_id,
        "subscription_id": subscription_id,
    }
    secrets_of_alice = [
        device["id"],
        fleet[0].serial,
        "Alice porch",
        me["id"],
        "alice@example.com",
        session_id,
        target_id,
        "alice-hook",
        event_id,
        clip_id,
        subscription_id,
    ]

    mallory = await new_user(client, mailbox, "mallory@example.com")
    doc = await (await client.get("/v1/openapi.json")).json()
    walked = 0
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            if path in NOT_OWNED:
                continue
            params = re.findall(r"{(\w+)}", path)
            assert set(params) <= ids.keys(), f"no id of the first account for {params} in {path}: extend ids"
            url = path.format(**ids)
            # Ids in query filters too: answered with 404, or with an empty list.
            filters = [p["name"] for p in op.get("parameters", []) if p["in"] == "query" and p["name"] in ids]
            if filters:
                url += "?" + "&".join(f"{name}={ids[name]}" for name in filters)
            body = None
            if "requestBody" in op:
                name = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
                assert name in BODIES, f"no example body for {name}: extend BODIES"
                body = BODIES[name]
            resp = await client.request(method.upper(), url, json=body, headers=auth(mallory))
            text = (await resp.text()).replace(url, "")  # the caller's own URL, echoed as `instance`
            walked += 1
            if params:
                assert resp.status == 404, f"{method.upper()} {url} answered {resp.status}: {text}"
            elif filters:
                empty = resp.status == 200 and (await resp.json())["items"] == []
                assert resp.status == 404 or empty, f"{method.upper()} {url} answered {resp.status}: {text}"
            for secret in secrets_of_alice:
                assert secret not in text, f"{method.upper()} {url} leaked {secret!r}"

    assert walked >= 15
    # and nothing of Alice's changed
    after = await (await client.get(f"/v1/devices/{device['id']}", headers=auth(alice))).json()
    assert after == device
    assert (await client.get("/v1/me", headers=auth(alice))).status == 200
    assert (await client.get(f"/v1/events/{event_id}", headers=auth(alice))).status == 200
    assert (await client.get(f"/v1/clips/{clip_id}", headers=auth(alice))).status == 200
    plans = await (await client.get(f"/v1/devices/{device['id']}/plans", headers=auth(alice))).json()
    assert plans["current"]["id"] == subscription_id and plans["current"]["status"] == "active"
    settings = await (await client.get("/v1/settings/alerts", headers=auth(alice))).json()
    assert settings["message_alerts"] is True
    device_alerts = await (await client.get(f"/v1/devices/{device['id']}/alerts", headers=auth(alice))).json()
    assert device_alerts["muted"] is False
    alice_log = json.dumps(await (await client.get("/v1/audit", headers=auth(alice))).json())
    assert "mallory" not in alice_log

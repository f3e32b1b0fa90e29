"""Every failure is RFC 9457 problem+json with a stable code; health, readiness, metrics and OpenAPI."""

from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from gateway.adapters.db.tables import throttle_hits
from gateway.bootstrap import Services
from gateway.services import throttle
from tests.support.api import auth, new_user
from tests.support.clock import ManualClock


async def problem(resp: object) -> dict[str, object]:
    assert resp.headers["Content-Type"].startswith("application/problem+json")  # type: ignore[attr-defined]
    body: dict[str, object] = await resp.json(content_type=None)  # type: ignore[attr-defined]
    assert {"type", "title", "status", "detail", "code"} <= body.keys()
    assert body["status"] == resp.status  # type: ignore[attr-defined]
    return body


async def test_malformed_json(client: TestClient) -> None:
    resp = await client.post(
        "/v1/sessions", data=b'{"identifier": ', headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400 and (await problem(resp))["code"] == "malformed_json"


async def test_body_must_be_an_object(client: TestClient) -> None:
    resp = await client.post("/v1/sessions", json=["a", "b"])
    assert resp.status == 422 and (await problem(resp))["code"] == "validation_failed"


async def test_wrong_types_name_the_field_without_echoing_input(client: TestClient) -> None:
    resp = await client.post("/v1/sessions", json={"identifier": "a@example.com", "password": 12345678901})
    body = await problem(resp)
    assert resp.status == 422 and body["code"] == "validation_failed"
    assert body["errors"] == [
        {"field": "password", "message": "Input should be a valid string", "type": "string_type"}
    ]
    assert "12345678901" not in await resp.text()


async def test_unknown_fields_are_refused(client: TestClient) -> None:
    resp = await client.post(
        "/v1/sessions", json={"identifier": "a@example.com", "password": "x", "admin": True}
    )
    body = await problem(resp)
    assert resp.status == 422 and body["errors"][0]["field"] == "admin"  # type: ignore[index]


async def test_oversized_body(client: TestClient) -> None:
    resp = await client.post(
        "/v1/sessions",
        data=b'{"identifier": "' + b"a" * 70_000 + b'"}',
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 413 and (await problem(resp))["code"] == "body_too_large"


async def test_wrong_media_type(client: TestClient) -> None:
    resp = await client.post("/v1/sessions", data="identifier=a", headers={"Content-Type": "text/plain"})
    assert resp.status == 400 and (await problem(resp))["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_token"),
        ({"Authorization": "Bearer cg_nope"}, "invalid_token"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing_token"),
        ({"Authorization": "Bearer xyz"}, "invalid_token"),
    ],
)
async def test_authentication_errors(client: TestClient, headers: dict[str, str], code: str) -> None:
    resp = await client.get("/v1/devices", headers=headers)
    assert resp.status == 401 and (await problem(resp))["code"] == code


async def test_unknown_path_and_method(client: TestClient) -> None:
    resp = await client.get("/v1/nothing-here")
    assert resp.status == 404 and (await problem(resp))["code"] == "not_found"
    resp = await client.put("/v1/devices")
    assert resp.status == 405 and (await problem(resp))["code"] == "method_not_allowed"


async def test_bad_query_parameters(client: TestClient, mailbox: Path) -> None:
    token = await new_user(client, mailbox, "q@example.com")
    resp = await client.get("/v1/audit?limit=0", headers=auth(token))
    assert resp.status == 422 and (await problem(resp))["code"] == "validation_failed"
    resp = await client.get("/v1/audit?cursor=abc", headers=auth(token))
    assert resp.status == 422 and (await problem(resp))["code"] == "invalid_cursor"


async def test_audit_pages_with_a_cursor(client: TestClient, mailbox: Path) -> None:
    token = await new_user(client, mailbox, "pager@example.com")
    for name in ("a", "b", "c"):
        await client.patch("/v1/me", json={"display_name": name}, headers=auth(token))
    seen: list[str] = []
    url = "/v1/audit?limit=2"
    while True:
        page = await (await client.get(url, headers=auth(token))).json()
        seen += [e["detail"].get("display_name", {}).get("to", e["action"]) for e in page["items"]]
        if page["next_cursor"] is None:
            break
        url = f"/v1/audit?limit=2&cursor={page['next_cursor']}"
    assert seen == ["c", "b", "a", "login", "account.confirmed"]


async def test_health_readiness_metrics(client: TestClient) -> None:
    assert (await (await client.get("/healthz")).json())["status"] == "ok"
    ready = await client.get("/readyz")
    checks = (await ready.json())["checks"]
    assert ready.status == 200 and set(checks.values()) == {"ok"}
    assert "database" in checks and {"store:eu", "store:sg", "store:us", "store:vn"} <= set(checks)
    metrics = await client.get("/metrics")
    assert metrics.status == 200 and "python_info" in await metrics.text()


async def test_openapi_document(client: TestClient) -> None:
    doc = await (await client.get("/v1/openapi.json")).json()
    assert doc["openapi"] == "3.1.0"
    schemas = doc["components"]["schemas"]
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            assert op["summary"] and "default" in op["responses"], (method, path)
            for response in op["responses"].values():
                for media in response.get("content", {}).values():
                    ref = media["schema"]["$ref"].rsplit("/", 1)[-1]
                    assert ref in schemas, (method, path, ref)
    assert doc["paths"]["/v1/devices"]["post"]["requestBody"]["content"]["application/json"]
    assert set(doc["paths"]["/v1/devices"]["post"]["responses"]) == {"200", "201", "default"}


async def test_housekeeping_prunes_expired_throttle_entries(
    client: TestClient, services: Services, clock: ManualClock
) -> None:
    for _ in range(3):
        await client.post(
            "/v1/sessions", json={"identifier": "nobody@example.com", "password": "wrong pass 123"}
        )
    clock.advance(hours=2)  # past the longest window (1 h)
    async with services.engine.begin() as conn:
        assert (
            await throttle.prune(conn, clock.now() - timedelta(hours=1)) == 6
        )  # identifier + address, 3 each
        assert (await conn.execute(select(func.count()).select_from(throttle_hits))).scalar() == 0

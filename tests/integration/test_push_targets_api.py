"""The push targets API on the real app: registration with a one-time secret, listing, removal, the URL
checks (schemes, SSRF) and the per-account limit. Tests run with push.allow_private_addresses off."""

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from gateway.adapters.db.tables import audit_log, push_targets
from gateway.bootstrap import Services
from gateway.domain.credentials import keyed_digest
from gateway.services.push import MAX_TARGETS_PER_ACCOUNT
from tests.support.api import auth, new_user

# Literal public addresses: the tests need no DNS.
HOOK = "https://1.1.1.1/camgate/hook"


async def add(client: TestClient, token: str, url: str, kind: str = "webhook") -> tuple[int, dict[str, str]]:
    resp = await client.post("/v1/push-targets", json={"kind": kind, "url": url}, headers=auth(token))
    return resp.status, await resp.json()


async def test_add_list_remove(client: TestClient, mailbox: Path, services: Services) -> None:
    token = await new_user(client, mailbox, "ann@example.com")
    status, created = await add(client, token, HOOK)
    assert status == 201, created
    assert created["kind"] == "webhook" and created["url"] == HOOK
    # The secret is recomputable from the pepper, never stored.
    assert created["secret"] == keyed_digest(services.pepper, "webhook", created["id"])

    listed = await (await client.get("/v1/push-targets", headers=auth(token))).json()
    assert listed == {"items": [{k: v for k, v in created.items() if k != "secret"}]}

    resp = await client.delete(f"/v1/push-targets/{created['id']}", headers=auth(token))
    assert resp.status == 204
    assert (await (await client.get("/v1/push-targets", headers=auth(token))).json()) == {"items": []}
    again = await client.delete(f"/v1/push-targets/{created['id']}", headers=auth(token))
    assert again.status == 404
    assert (await again.json())["code"] == "push_target_not_found"

    log = (await (await client.get("/v1/audit", headers=auth(token))).json())["items"]
    actions = [(e["action"], e["target_id"]) for e in log]
    assert ("push_target.added", created["id"]) in actions
    assert ("push_target.removed", created["id"]) in actions
    assert created["secret"] not in str(log)


async def test_the_secret_is_not_kept_anywhere(client: TestClient, mailbox: Path, services: Services) -> None:
    token = await new_user(client, mailbox, "ben@example.com")
    _, created = await add(client, token, HOOK)
    async with services.engine.connect() as conn:
        rows = [
            *(await conn.execute(select(push_targets))).all(),
            *(await conn.execute(select(audit_log))).all(),
        ]
    assert created["secret"] not in repr(rows)


@pytest.mark.parametrize(
    "url",
    ["ftp://1.1.1.1/hook", "javascript:alert(1)", "hooks.example.com/x", "https://user:pw@1.1.1.1/hook"],
)
async def test_bad_urls(client: TestClient, mailbox: Path, url: str) -> None:
    token = await new_user(client, mailbox, "cat@example.com")
    status, problem = await add(client, token, url)
    assert (status, problem["code"]) == (422, "webhook_url_invalid")


async def test_unknown_kind_is_a_validation_error(client: TestClient, mailbox: Path) -> None:
    token = await new_user(client, mailbox, "dan@example.com")
    status, problem = await add(client, token, HOOK, kind="carrier-pigeon")
    assert (status, problem["code"]) == (422, "validation_failed")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",  # a name resolving to loopback
        "http://2130706433/hook",  # 127.0.0.1 spelled as one number
        "http://10.1.2.3/hook",
        "https://192.168.1.10/hook",
        "http://169.254.169.254/latest/meta-data/",  # cloud instance metadata
        "http://0.0.0.0/hook",
        "http://224.0.0.251/hook",
        "http://[::1]/hook",
        "http://[fe80::1]/hook",
        "http://[::ffff:10.0.0.1]/hook",
    ],
)
async def test_private_addresses_are_refused(client: TestClient, mailbox: Path, url: str) -> None:
    token = await new_user(client, mailbox, "eve@example.com")
    status, problem = await add(client, token, url)
    assert (status, problem["code"]) == (422, "webhook_address_forbidden"), problem


async def test_unresolvable_host(client: TestClient, mailbox: Path) -> None:
    token = await new_user(client, mailbox, "fay@example.com")
    status, problem = await add(client, token, "https://no-such-host.invalid/hook")
    assert (status, problem["code"]) == (422, "webhook_host_unresolvable")


async def test_duplicates_and_the_limit(client: TestClient, mailbox: Path) -> None:
    token = await new_user(client, mailbox, "gus@example.com")
    assert (await add(client, token, HOOK))[0] == 201
    status, problem = await add(client, token, HOOK)
    assert (status, problem["code"]) == (409, "push_target_exists")
    for i in range(1, MAX_TARGETS_PER_ACCOUNT):
        assert (await add(client, token, f"{HOOK}/{i}"))[0] == 201
    status, problem = await add(client, token, f"{HOOK}/one-too-many")
    assert (status, problem["code"]) == (409, "push_target_limit")


async def test_another_accounts_target_is_not_found(client: TestClient, mailbox: Path) -> None:
    owner = await new_user(client, mailbox, "hal@example.com")
    other = await new_user(client, mailbox, "ivy@example.com")
    _, created = await add(client, owner, HOOK)
    resp = await client.delete(f"/v1/push-targets/{created['id']}", headers=auth(other))
    assert resp.status == 404
    assert (await resp.json())["code"] == "push_target_not_found"
    assert (await (await client.get("/v1/push-targets", headers=auth(other))).json()) == {"items": []}
    still = await (await client.get("/v1/push-targets", headers=auth(owner))).json()
    assert [t["id"] for t in still["items"]] == [created["id"]]


async def test_needs_a_token(client: TestClient) -> None:
    resp = await client.get("/v1/push-targets")
    assert resp.status == 401

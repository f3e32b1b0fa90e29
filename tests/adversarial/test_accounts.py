"""Issue 8, findings 3-5: the account flows against an attacker, on SQLite and PostgreSQL.

3. confirm is no oracle for who has an account; 4. a second sign-up cannot take over a pending one;
5. every throttle holds under parallel requests, and a flood of hashes gets 503 instead of a queue.
"""

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import func, inspect, select, text

from device_sim.registry import SimDevice
from gateway.adapters.db.tables import audit_log
from gateway.api.app import create_app
from gateway.bootstrap import Services, build
from tests.integration.conftest import test_settings
from tests.support.api import PASSWORD, auth, last_code, new_user, serve, sign_up_body
from tests.support.clock import ManualClock

ATTACKER_PASSWORD = "attacker chose this one"
CONFIRM = "/v1/accounts/confirm"


def argon2_runs(kind: str) -> float:
    """argon2 operations of ``kind`` run so far in this process (0 before the first)."""
    return REGISTRY.get_sample_value("camgate_password_hashes_total", {"kind": kind, "outcome": "done"}) or 0


async def answer(resp: Any) -> tuple[int, str, bytes]:
    """What a client can observe of a response, apart from its date."""
    return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


@asynccontextmanager
async def app_with(
    database_url: str, tmp_path: Path, **overrides: Any
) -> AsyncIterator[tuple[TestClient, Path]]:
    """A client of the real app with some settings changed; yields it and its mailbox."""
    settings = test_settings(database_url, tmp_path, **overrides)
    async with AsyncExitStack() as stack:
        services = await build(settings, stack, clock=ManualClock())
        yield await serve(create_app(services), stack), settings.notify.mailbox_dir


# --- finding 3: the confirm oracle ----------------------------------------------------------------


async def test_confirm_answers_an_active_identifier_like_an_unknown_one(
    client: TestClient, mailbox: Path
) -> None:
    await new_user(client, mailbox, "known@example.com")
    # Whatever the body (with or without a password), the two answers are the same bytes.
    for extra in ({}, {"password": PASSWORD}):
        before = argon2_runs("verify")
        known = await client.post(
            CONFIRM, json={"identifier": "known@example.com", "code": "123456", **extra}
        )
        unknown = await client.post(
            CONFIRM, json={"identifier": "nobody@example.com", "code": "123456", **extra}
        )
        known_answer = await answer(known)
        assert known_answer == await answer(unknown), known_answer
        assert known.status == 422, known_answer
        assert argon2_runs("verify") == before, "a wrong code costs no hash, whoever the identifier is"


# --- finding 4: pending-account takeover ----------------------------------------------------------


async def sign_up(client: TestClient, identifier: str, password: str, region: str) -> bytes:
    resp = await client.post("/v1/accounts", json=sign_up_body(identifier, password=password, region=region))
    assert resp.status == 202, await resp.text()
    return await resp.read()


async def log_in_status(client: TestClient, identifier: str, password: str) -> int:
    resp = await client.post("/v1/sessions", json={"identifier": identifier, "password": password})
    return resp.status


@pytest.mark.parametrize("order", ["victim_first", "attacker_first"])
async def test_a_second_sign_up_cannot_take_over_a_pending_account(
    client: TestClient, mailbox: Path, order: str
) -> None:
    victim = "victim@example.com"
    if order == "victim_first":
        first = await sign_up(client, victim, PASSWORD, "sg")
        second = await sign_up(client, victim, ATTACKER_PASSWORD, "eu")
        assert first == second, "sign-up answers the same for a new and a pending identifier"
        # The newest code in the victim's mailbox was sent for the attacker's sign-up: whether the victim
        # presents it alone (as the old API took it) or with their own password, nothing activates.
        code = last_code(mailbox, victim)
        for extra in ({}, {"password": PASSWORD}):
            resp = await client.post(CONFIRM, json={"identifier": victim, "code": code, **extra})
            assert resp.status == 422, await resp.text()
        assert await log_in_status(client, victim, ATTACKER_PASSWORD) != 201
        await sign_up(client, victim, PASSWORD, "sg")  # the victim asks again
    else:
        await sign_up(client, victim, ATTACKER_PASSWORD, "eu")
        await sign_up(client, victim, PASSWORD, "sg")
    # The victim's own sign-up, confirmed with its code and password, is the victim's account.
    resp = await client.post(
        CONFIRM, json={"identifier": victim, "code": last_code(mailbox, victim), "password": PASSWORD}
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["region"] == "sg"
    assert await log_in_status(client, victim, PASSWORD) == 201
    assert await log_in_status(client, victim, ATTACKER_PASSWORD) == 401


# --- finding 5: throttles under parallel requests ---------------------------------------------------


async def test_parallel_wrong_log_ins_get_at_most_the_limit(
    client: TestClient, mailbox: Path, services: Services
) -> None:
    await new_user(client, mailbox, "target@example.com")
    before = argon2_runs("verify")
    resps = await asyncio.gather(
        *(
            client.post(
                "/v1/sessions", json={"identifier": "target@example.com", "password": f"guess {i:04d}"}
            )
            for i in range(60)
        )
    )
    statuses = Counter(r.status for r in resps)
    assert statuses == {401: 5, 429: 55}, statuses
    assert argon2_runs("verify") - before == 5, "only reserved attempts are hashed"
    async with services.engine.connect() as conn:
        failed = (
            await conn.execute(select(func.count()).where(audit_log.c.action == "login.failed"))
        ).scalar_one()
    assert failed == 5
    # and the lockout holds for the right password too
    assert await log_in_status(client, "target@example.com", PASSWORD) == 429


async def attempts_counted(services: Services) -> int:
    """The attempt count of the newest one-time code: each guess compared with it counts one."""
    async with services.engine.connect() as conn:
        names = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
        # pending_signups since issue 8; the code lived in verification_codes before
        table = "pending_signups" if "pending_signups" in names else "verification_codes"
        return int((await conn.execute(text(f"SELECT max(attempts) FROM {table}"))).scalar_one())  # noqa: S608


async def test_parallel_wrong_confirm_codes_get_at_most_the_limit(
    client: TestClient, mailbox: Path, services: Services
) -> None:
    ident = "guessed@example.com"
    await client.post("/v1/accounts", json=sign_up_body(ident))
    code = last_code(mailbox, ident)
    guesses = [f"{n:06d}" for n in range(51) if f"{n:06d}" != code][:50]
    resps = await asyncio.gather(
        *(client.post(CONFIRM, json={"identifier": ident, "code": g, "password": PASSWORD}) for g in guesses)
    )
    assert {r.status for r in resps} == {422}
    assert len({await r.read() for r in resps}) == 1, "a void code and a wrong one answer alike"
    assert await attempts_counted(services) == 5, "only five of the fifty guesses were compared"
    resp = await client.post(CONFIRM, json={"identifier": ident, "code": code, "password": PASSWORD})
    assert resp.status == 422, "the code is void after five attempts"


async def test_parallel_code_sends_stop_at_the_limit(client: TestClient, mailbox: Path) -> None:
    before = argon2_runs("hash")
    resps = await asyncio.gather(
        *(client.post("/v1/accounts", json=sign_up_body("flood@example.com")) for _ in range(40))
    )
    statuses = Counter(r.status for r in resps)
    assert statuses == {202: 5, 429: 35}, statuses
    assert len(list((mailbox / "flood@example.com").glob("*.txt"))) == 5
    # the limit is checked before the hash: refused sign-ups cost no argon2 time
    assert argon2_runs("hash") - before == 5
    resps = await asyncio.gather(
        *(
            client.post("/v1/accounts/resend-code", json={"identifier": "flood@example.com"})
            for _ in range(10)
        )
    )
    assert {r.status for r in resps} == {429}
    assert len(list((mailbox / "flood@example.com").glob("*.txt"))) == 5


async def test_code_sends_are_limited_per_address(client: TestClient, mailbox: Path) -> None:
    resps = await asyncio.gather(
        *(client.post("/v1/accounts", json=sign_up_body(f"spray{i}@example.com")) for i in range(30))
    )
    statuses = Counter(r.status for r in resps)
    assert statuses == {202: 20, 429: 10}, statuses
    assert len(list(mailbox.glob("*/*.txt"))) == 20  # noqa: ASYNC240  # a test's tmp folder


async def test_code_sends_are_limited_overall(database_url: str, tmp_path: Path) -> None:
    throttle = {"code_sends_per_address": [1000, 3600], "code_sends_overall": [8, 3600]}
    async with app_with(database_url, tmp_path, throttle=throttle) as (client, mailbox):
        resps = await asyncio.gather(
            *(client.post("/v1/accounts", json=sign_up_body(f"many{i}@example.com")) for i in range(20))
        )
        statuses = Counter(r.status for r in resps)
        assert statuses == {202: 8, 429: 12}, statuses
        assert len(list(mailbox.glob("*/*.txt"))) == 8  # a test's tmp folder


async def test_parallel_wrong_binding_codes_lock_at_five(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services
) -> None:
    cam = fleet[0]
    token = await new_user(client, mailbox, "binder@example.com")
    wrong = "AAAAAA" if cam.code != "AAAAAA" else "BBBBBB"
    resps = await asyncio.gather(
        *(
            client.post("/v1/devices", json={"serial": cam.serial, "code": wrong}, headers=auth(token))
            for _ in range(40)
        )
    )
    statuses = Counter(r.status for r in resps)
    assert statuses == {422: 5, 423: 35}, statuses
    async with services.engine.connect() as conn:
        failed = (
            await conn.execute(select(func.count()).where(audit_log.c.action == "device.bind_failed"))
        ).scalar_one()
    assert failed == 5
    resp = await client.post(
        "/v1/devices", json={"serial": cam.serial, "code": cam.code}, headers=auth(token)
    )
    assert resp.status == 423, "the lockout holds for the right code too"


async def test_a_full_hashing_queue_answers_503(database_url: str, tmp_path: Path) -> None:
    # One slow hashing thread and the default queue: 80 log-ins at once (from 80 addresses behind a
    # trusted proxy, so no address limit applies) cannot all wait for it.
    security = {"secret_key": "k" * 40, "argon2_time_cost": 2, "argon2_memory_kib": 16384, "hash_workers": 1}
    http = {"trusted_proxies": ["127.0.0.1"]}
    async with app_with(database_url, tmp_path, security=security, http=http) as (client, _):
        resps = await asyncio.gather(
            *(
                client.post(
                    "/v1/sessions",
                    json={"identifier": f"u{i}@example.com", "password": "guess 1234"},
                    headers={"X-Forwarded-For": f"203.0.113.{i}"},
                )
                for i in range(80)
            )
        )
        statuses = Counter(r.status for r in resps)
        assert set(statuses) == {401, 503} and statuses[503] >= 10, statuses
        busy = next(r for r in resps if r.status == 503)
        assert (await busy.json())["code"] == "busy" and int(busy.headers["Retry-After"]) >= 1
        # a refused log-in is not a failed one: the identifier was not charged for it
        refused = [i for i, r in enumerate(resps) if r.status == 503]
        for _ in range(5):
            resp = await client.post(
                "/v1/sessions", json={"identifier": f"u{refused[0]}@example.com", "password": "x"}
            )
            assert resp.status == 401

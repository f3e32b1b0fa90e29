"""Sign-up, confirmation, log-in, sessions and profile through the real app, on SQLite and PostgreSQL."""

from pathlib import Path

from aiohttp.test_utils import TestClient
from sqlalchemy import select

from gateway.adapters.db.tables import guardian_consents, pending_signups
from gateway.bootstrap import Services
from tests.support.api import PASSWORD, auth, last_code, new_user, sign_up_body
from tests.support.clock import ManualClock


async def test_sign_up_confirm_log_in_and_out(client: TestClient, mailbox: Path) -> None:
    token = await new_user(client, mailbox, "ana@example.com")
    me = await client.get("/v1/me", headers=auth(token))
    assert me.status == 200
    body = await me.json()
    assert body["email"] == "ana@example.com" and body["status"] == "active" and body["region"] == "sg"
    assert (await client.delete("/v1/sessions/current", headers=auth(token))).status == 204
    again = await client.get("/v1/me", headers=auth(token))
    assert again.status == 401 and (await again.json())["code"] == "invalid_token"


async def test_codes_and_passwords_are_not_stored_in_clear(
    client: TestClient, mailbox: Path, services: Services
) -> None:
    await client.post("/v1/accounts", json=sign_up_body("bo@example.com"))
    code = last_code(mailbox, "bo@example.com")
    async with services.engine.connect() as conn:
        row = (await conn.execute(select(pending_signups.c.password_hash))).one()
        dump = repr((await conn.execute(select(pending_signups))).all())
    assert row.password_hash.startswith("$argon2id$")
    assert PASSWORD not in dump and code not in dump


async def test_wrong_codes_void_the_code_after_five_attempts(client: TestClient, mailbox: Path) -> None:
    await client.post("/v1/accounts", json=sign_up_body("cy@example.com"))
    code = last_code(mailbox, "cy@example.com")
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(5):
        resp = await client.post(
            "/v1/accounts/confirm", json={"identifier": "cy@example.com", "code": wrong, "password": PASSWORD}
        )
        assert resp.status == 422 and (await resp.json())["code"] == "invalid_code"
    resp = await client.post(
        "/v1/accounts/confirm", json={"identifier": "cy@example.com", "code": code, "password": PASSWORD}
    )
    assert resp.status == 422, "the right code after five wrong ones must be refused"
    assert (
        await client.post("/v1/accounts/resend-code", json={"identifier": "cy@example.com"})
    ).status == 202
    fresh = last_code(mailbox, "cy@example.com")
    resp = await client.post(
        "/v1/accounts/confirm", json={"identifier": "cy@example.com", "code": fresh, "password": PASSWORD}
    )
    assert resp.status == 200


async def test_codes_expire(client: TestClient, mailbox: Path, clock: ManualClock) -> None:
    await client.post("/v1/accounts", json=sign_up_body("di@example.com"))
    code = last_code(mailbox, "di@example.com")
    clock.advance(minutes=16)
    resp = await client.post(
        "/v1/accounts/confirm", json={"identifier": "di@example.com", "code": code, "password": PASSWORD}
    )
    assert resp.status == 422 and (await resp.json())["code"] == "invalid_code"


async def test_sign_up_does_not_reveal_existing_accounts(client: TestClient, mailbox: Path) -> None:
    await new_user(client, mailbox, "ed@example.com")
    fresh = await client.post("/v1/accounts", json=sign_up_body("new@example.com"))
    taken = await client.post(
        "/v1/accounts", json=sign_up_body("ed@example.com", password="another passphrase")
    )
    assert fresh.status == taken.status == 202
    assert (await fresh.json())["detail"] == (await taken.json())["detail"]
    notice = sorted((mailbox / "ed@example.com").glob("*.txt"), key=lambda p: p.stat().st_mtime_ns)[-1]
    assert "already has an account" in notice.read_text()
    # the original password still works: a sign-up attempt cannot take over an active account
    resp = await client.post("/v1/sessions", json={"identifier": "ed@example.com", "password": PASSWORD})
    assert resp.status == 201


async def test_age_rule(client: TestClient, mailbox: Path, services: Services) -> None:
    # the test clock says 2026-06-01
    child = await client.post("/v1/accounts", json=sign_up_body("kid@example.com", birth_date="2012-06-02"))
    assert child.status == 403 and (await child.json())["code"] == "age_below_minimum"
    teen = await client.post("/v1/accounts", json=sign_up_body("teen@example.com", birth_date="2010-01-01"))
    assert teen.status == 422 and (await teen.json())["code"] == "guardian_consent_required"
    consent = {"guardian_name": "Pat Doe", "guardian_contact": "pat@example.com", "consent": True}
    teen = await client.post(
        "/v1/accounts",
        json=sign_up_body("teen@example.com", birth_date="2010-01-01", guardian_consent=consent),
    )
    assert teen.status == 202
    confirmed = await client.post(
        "/v1/accounts/confirm",
        json={
            "identifier": "teen@example.com",
            "code": last_code(mailbox, "teen@example.com"),
            "password": PASSWORD,
        },
    )
    assert confirmed.status == 200, await confirmed.text()
    async with services.engine.connect() as conn:  # the consent travels with the sign-up it was given for
        recorded = (await conn.execute(select(guardian_consents))).one()
    assert recorded.guardian_name == "Pat Doe" and recorded.recorded_at is not None
    no_consent = {**consent, "consent": False}
    resp = await client.post(
        "/v1/accounts",
        json=sign_up_body("t2@example.com", birth_date="2010-01-01", guardian_consent=no_consent),
    )
    assert resp.status == 422 and (await resp.json())["code"] == "validation_failed"


async def test_sign_up_refusals_have_stable_codes(client: TestClient) -> None:
    cases = [
        (sign_up_body("x@example.com", region="mars"), "unknown_region"),
        (sign_up_body("x@example.com", password="short"), "weak_password"),
        (sign_up_body("not-an-address"), "invalid_identifier"),
        (sign_up_body("x@example.com", time_zone="Mars/Olympus"), "invalid_time_zone"),
        (sign_up_body("x@example.com", birth_date="yesterday"), "validation_failed"),
    ]
    for body, code in cases:
        resp = await client.post("/v1/accounts", json=body)
        problem = await resp.json()
        assert resp.status == 422 and problem["code"] == code, (code, problem)


async def test_log_in_is_throttled_per_identifier(
    client: TestClient, mailbox: Path, clock: ManualClock
) -> None:
    await new_user(client, mailbox, "fi@example.com")
    for _ in range(5):
        resp = await client.post(
            "/v1/sessions", json={"identifier": "fi@example.com", "password": "wrong pass 123"}
        )
        assert resp.status == 401 and (await resp.json())["code"] == "invalid_credentials"
    blocked = await client.post("/v1/sessions", json={"identifier": "fi@example.com", "password": PASSWORD})
    assert blocked.status == 429 and (await blocked.json())["code"] == "too_many_login_attempts"
    assert 0 < int(blocked.headers["Retry-After"]) <= 900
    clock.advance(minutes=16)
    resp = await client.post("/v1/sessions", json={"identifier": "fi@example.com", "password": PASSWORD})
    assert resp.status == 201


async def test_unknown_identifier_and_wrong_password_look_alike(client: TestClient, mailbox: Path) -> None:
    await new_user(client, mailbox, "gu@example.com")
    wrong = await client.post(
        "/v1/sessions", json={"identifier": "gu@example.com", "password": "wrong pass 123"}
    )
    unknown = await client.post(
        "/v1/sessions", json={"identifier": "zz@example.com", "password": "wrong pass 123"}
    )
    assert wrong.status == unknown.status == 401
    assert await wrong.json() == await unknown.json()


async def test_unconfirmed_accounts_cannot_log_in(client: TestClient) -> None:
    await client.post("/v1/accounts", json=sign_up_body("ha@example.com"))
    resp = await client.post("/v1/sessions", json={"identifier": "ha@example.com", "password": PASSWORD})
    assert resp.status == 403 and (await resp.json())["code"] == "account_not_confirmed"


async def test_sessions_can_be_listed_and_revoked(client: TestClient, mailbox: Path) -> None:
    phone_token = await new_user(client, mailbox, "io@example.com")
    resp = await client.post(
        "/v1/sessions",
        json={"identifier": "io@example.com", "password": PASSWORD},
        headers={"User-Agent": "camgate-web/1.0"},
    )
    web_token = (await resp.json())["token"]
    listed = await (await client.get("/v1/sessions", headers=auth(phone_token))).json()
    assert len(listed["items"]) == 2
    web = next(s for s in listed["items"] if s["user_agent"] == "camgate-web/1.0")
    assert not web["current"]
    assert (await client.delete(f"/v1/sessions/{web['id']}", headers=auth(phone_token))).status == 204
    assert (await client.get("/v1/me", headers=auth(web_token))).status == 401
    assert (await client.get("/v1/me", headers=auth(phone_token))).status == 200
    assert (await client.delete(f"/v1/sessions/{web['id']}", headers=auth(phone_token))).status == 404


async def test_tokens_expire(client: TestClient, mailbox: Path, clock: ManualClock) -> None:
    token = await new_user(client, mailbox, "ju@example.com")
    clock.advance(days=31)
    assert (await client.get("/v1/me", headers=auth(token))).status == 401


async def test_profile_correction_is_audited(client: TestClient, mailbox: Path) -> None:
    token = await new_user(client, mailbox, "ka@example.com")
    resp = await client.patch(
        "/v1/me", json={"display_name": "Ka", "time_zone": "Asia/Singapore"}, headers=auth(token)
    )
    assert resp.status == 200
    body = await resp.json()
    assert (body["display_name"], body["time_zone"]) == ("Ka", "Asia/Singapore")
    bad = await client.patch("/v1/me", json={"time_zone": "Nowhere/Land"}, headers=auth(token))
    assert bad.status == 422 and (await bad.json())["code"] == "invalid_time_zone"
    log = await (await client.get("/v1/audit", headers=auth(token))).json()
    entry = next(e for e in log["items"] if e["action"] == "profile.corrected")
    assert entry["detail"]["time_zone"] == {"from": "UTC", "to": "Asia/Singapore"}


async def test_code_sends_are_throttled(client: TestClient) -> None:
    for _ in range(5):
        assert (await client.post("/v1/accounts", json=sign_up_body("la@example.com"))).status == 202
    resp = await client.post("/v1/accounts", json=sign_up_body("la@example.com"))
    assert resp.status == 429 and (await resp.json())["code"] == "too_many_codes"
    assert "Retry-After" in resp.headers


async def test_regions_are_listed(client: TestClient) -> None:
    body = await (await client.get("/v1/regions")).json()
    assert {r["id"] for r in body["items"]} == {"sg", "eu", "us", "vn"}

"""Helpers for API tests: sign a person up through the real API and read their code from the mailbox."""

import re
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

PASSWORD = "correct horse battery"


def auth(token: str) -> dict[str, str]:
    """The Authorization header for a token."""
    return {"Authorization": f"Bearer {token}"}


def last_code(mailbox: Path, identifier: str) -> str:
    """The newest one-time code in the development mailbox of ``identifier``."""
    files = sorted((mailbox / identifier).glob("*.txt"), key=lambda p: p.stat().st_mtime_ns)
    assert files, f"no message for {identifier} in {mailbox}"
    match = re.search(r"code is (\d{6})", files[-1].read_text())
    assert match, f"no code in {files[-1]}"
    return match.group(1)


def sign_up_body(identifier: str, **overrides: Any) -> dict[str, Any]:
    """A valid sign-up body for an adult in region sg."""
    return {
        "identifier": identifier,
        "password": PASSWORD,
        "birth_date": "1990-05-17",
        "region": "sg",
        **overrides,
    }


async def new_user(client: TestClient, mailbox: Path, identifier: str) -> str:
    """Signs up, confirms and logs in through the API; returns the bearer token."""
    resp = await client.post("/v1/accounts", json=sign_up_body(identifier))
    assert resp.status == 202, await resp.text()
    resp = await client.post(
        "/v1/accounts/confirm",
        json={"identifier": identifier, "code": last_code(mailbox, identifier), "password": PASSWORD},
    )
    assert resp.status == 200, await resp.text()
    resp = await client.post("/v1/sessions", json={"identifier": identifier, "password": PASSWORD})
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["token"])


async def serve(app: web.Application, stack: AsyncExitStack) -> TestClient:
    """A client of ``app`` that the stack closes, so the app's background jobs stop before whatever the
    stack opened earlier (the services they use) is closed."""
    client = TestClient(TestServer(app))
    await client.start_server()
    stack.push_async_callback(client.close)
    return client

"""One-time codes over a real local SMTP server (aiosmtpd) and an SMS provider webhook (a local HTTP server)."""

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from email import message_from_bytes
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiosmtpd.controller import Controller

from gateway.adapters.senders import DeliveryFailed, SmsWebhookSender, SmtpSender
from gateway.api.app import create_app
from gateway.bootstrap import build
from gateway.config import SmsWebhookSettings, SmtpSettings
from gateway.domain.accounts import Channel
from gateway.ports import Message
from tests.integration.conftest import test_settings
from tests.support.api import PASSWORD, serve, sign_up_body
from tests.support.clock import ManualClock


class Inbox:
    """aiosmtpd handler keeping every message received."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.messages.append((list(envelope.rcpt_tos), envelope.original_content))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server on a free port."""
    inbox, port = Inbox(), _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


@pytest.fixture
async def sms_provider(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> AsyncIterator[tuple[list[dict[str, Any]], str, list[int]]]:
    """A local SMS provider: records JSON posts with a valid bearer token; answers with the queued statuses."""
    received: list[dict[str, Any]] = []
    statuses: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer sms-token":
            return web.Response(status=401)
        received.append(await request.json())
        return web.Response(status=statuses.pop(0) if statuses else 202)

    app = web.Application()
    app.router.add_post("/sms", handle)
    server = await aiohttp_server(app)
    yield received, str(server.make_url("/sms")), statuses


async def test_smtp_sender_delivers(smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    sender = SmtpSender(
        SmtpSettings(host="127.0.0.1", port=port, starttls=False, sender="cg <no-reply@cg.test>")
    )
    await sender.send(Message(Channel.EMAIL, "ana@example.com", "Your code", "code is 123456"))
    ((rcpt, raw),) = inbox.messages
    mail = message_from_bytes(raw)
    assert rcpt == ["ana@example.com"] and mail["Subject"] == "Your code"
    assert "123456" in mail.get_payload()


async def test_smtp_sender_reports_unreachable_server() -> None:
    sender = SmtpSender(SmtpSettings(host="127.0.0.1", port=_free_port(), starttls=False))
    with pytest.raises(DeliveryFailed, match="SMTP delivery"):
        await sender.send(Message(Channel.EMAIL, "ana@example.com", "s", "b"))


async def test_sms_webhook_sender(sms_provider: tuple[list[dict[str, Any]], str, list[int]]) -> None:
    received, url, statuses = sms_provider
    async with aiohttp.ClientSession() as http:
        sender = SmsWebhookSender(SmsWebhookSettings(url=url, token="sms-token"), http)  # type: ignore[arg-type]
        await sender.send(Message(Channel.SMS, "+6591234567", "s", "code is 654321"))
        assert received == [{"to": "+6591234567", "text": "code is 654321"}]
        statuses.append(500)
        with pytest.raises(DeliveryFailed, match="HTTP 500"):
            await sender.send(Message(Channel.SMS, "+6591234567", "s", "again"))


async def test_sign_up_by_email_and_phone_through_real_providers(
    smtp: tuple[Inbox, int],
    sms_provider: tuple[list[dict[str, Any]], str, list[int]],
    tmp_path: Path,
) -> None:
    inbox, port = smtp
    received, url, _ = sms_provider
    settings = test_settings(
        f"sqlite+aiosqlite:///{tmp_path}/cg.db",
        tmp_path,
        notify={
            "smtp": {"host": "127.0.0.1", "port": port, "starttls": False},
            "sms_webhook": {"url": url, "token": "sms-token"},
        },
    )
    async with AsyncExitStack() as stack:
        client = await serve(create_app(await build(settings, stack, clock=ManualClock())), stack)
        assert (await client.post("/v1/accounts", json=sign_up_body("mail@example.com"))).status == 202
        assert (await client.post("/v1/accounts", json=sign_up_body("+65 9123 4567"))).status == 202
        await asyncio.sleep(0)
        email_code = re.search(r"code is (\d{6})", message_from_bytes(inbox.messages[-1][1]).get_payload())
        sms_code = re.search(r"code is (\d{6})", received[-1]["text"])
        assert email_code and sms_code and received[-1]["to"] == "+6591234567"
        for ident, code in (("mail@example.com", email_code[1]), ("+6591234567", sms_code[1])):
            resp = await client.post(
                "/v1/accounts/confirm", json={"identifier": ident, "code": code, "password": PASSWORD}
            )
            assert resp.status == 200, await resp.text()
        assert not (tmp_path / "mailbox").exists(), "configured providers must be used, not the dev mailbox"
        assert json.dumps(received).count("code is") == 1


async def test_provider_failure_is_a_503_problem(tmp_path: Path) -> None:
    settings = test_settings(
        f"sqlite+aiosqlite:///{tmp_path}/cg.db",
        tmp_path,
        notify={"smtp": {"host": "127.0.0.1", "port": _free_port(), "starttls": False}},
    )
    async with AsyncExitStack() as stack:
        client = await serve(create_app(await build(settings, stack, clock=ManualClock())), stack)
        resp = await client.post("/v1/accounts", json=sign_up_body("down@example.com"))
        assert resp.status == 503 and (await resp.json())["code"] == "code_delivery_failed"
        assert "Retry-After" in resp.headers

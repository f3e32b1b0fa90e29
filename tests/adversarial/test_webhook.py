"""Finding 12 (webhook SSRF and tarpits) against the real app, the real dispatcher and both databases.

Receivers are real TCP servers on 127.0.0.1 that count every connection made to them. Host names are
answered by a DNS server of the test's own (``FakeDns``), which the gateway asks through
``push.nameservers``: the test decides what a name resolves to, and changes it between registration and
delivery as a rebinding attacker would.
"""

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import insert, select

from gateway.adapters.db.tables import push_outbox, push_targets
from gateway.api.app import create_app
from gateway.bootstrap import Services, build
from gateway.config import Settings
from tests.integration.conftest import test_settings
from tests.integration.test_push_delivery import seed_account, seed_event
from tests.support.api import auth, new_user, serve
from tests.support.clock import ManualClock

# Internal addresses in the IPv6 forms that Python 3.11's is_global (or a naive unwrap) lets through.
BLOCKED_FORMS = [
    pytest.param("64:ff9b::a9fe:a9fe", id="nat64-of-metadata-169.254.169.254"),
    pytest.param("64:ff9b:1::a9fe:a9fe", id="nat64-local-use-prefix"),
    pytest.param("2002:7f00:1::", id="6to4-of-127.0.0.1"),
    pytest.param("2002:a00:1::1", id="6to4-of-10.0.0.1"),
    pytest.param("::127.0.0.1", id="ipv4-compatible-127.0.0.1"),
    pytest.param("::ffff:10.0.0.1", id="ipv4-mapped-10.0.0.1"),
    pytest.param("::ffff:0:a9fe:a9fe", id="ipv4-translated-169.254.169.254"),
    pytest.param("2001:0:4136:e378:8000:63bf:80ff:fffe", id="teredo-of-127.0.0.1"),
    pytest.param("fec0::1", id="site-local"),
]
GLOBAL_V4 = "1.1.1.1"


# --- the test's own DNS server and receivers -----------------------------------------------------------


class FakeDns(asyncio.DatagramProtocol):
    """A UDP DNS server answering A and AAAA from ``names`` (TTL 0), NXDOMAIN for anything else."""

    def __init__(self) -> None:
        self.names: dict[str, list[str]] = {}
        self.queries: list[tuple[str, str]] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    def point(self, name: str, *addresses: str) -> None:
        """What ``name`` resolves to from now on."""
        self.names[name] = list(addresses)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # a datagram endpoint's transport
        self.port = self.transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        kind = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, kind))
        response = dns.message.make_response(query)
        if name not in self.names:
            response.set_rcode(dns.rcode.NXDOMAIN)
        else:
            wanted = [a for a in self.names[name] if (":" in a) == (kind == "AAAA")]
            if wanted and kind in {"A", "AAAA"}:
                response.answer.append(dns.rrset.from_text(question.name, 0, "IN", kind, *wanted))
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


@dataclass
class Receiver:
    """A TCP server on 127.0.0.1 that counts connections. ``answer``: reply 200 to each request;
    otherwise a tarpit that reads the request and then trickles one byte of a status line a second."""

    answer: bool = True
    connections: int = 0
    open: int = 0
    requests: list[float] = field(default_factory=list)  # time.monotonic() of each request head
    hung_up_after: list[float] = field(default_factory=list)  # the tarpit's connections' lifetimes
    server: asyncio.Server | None = None
    handlers: set[asyncio.Task[Any]] = field(default_factory=set)
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        opened = time.monotonic()
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length")
                ),
                0,
            )
            await reader.readexactly(length)
            self.requests.append(time.monotonic())
            if self.answer:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
            else:
                for byte in b"HTTP/1.1 200 OK\r\n" * 100:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    with contextlib.suppress(TimeoutError):
                        if await asyncio.wait_for(reader.read(1), 1.0) == b"":
                            self.hung_up_after.append(time.monotonic() - opened)  # the client gave up
                            break
                    if self.closing.is_set():
                        break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            self.handlers.discard(task)
            writer.close()


@pytest.fixture
async def fake_dns() -> AsyncIterator[FakeDns]:
    """The DNS server the gateway asks (``push.nameservers``)."""
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(FakeDns, local_addr=("127.0.0.1", 0))
    yield server
    transport.close()


async def start(receiver: Receiver) -> Receiver:
    receiver.server = await asyncio.start_server(receiver._serve, "127.0.0.1", 0)
    return receiver


async def shut(receiver: Receiver) -> None:
    assert receiver.server is not None
    receiver.server.close()
    receiver.closing.set()
    await asyncio.gather(*receiver.handlers, return_exceptions=True)
    await receiver.server.wait_closed()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """An answering receiver on loopback: what an SSRF would reach."""
    started = await start(Receiver())
    yield started
    await shut(started)


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_dns: FakeDns) -> Settings:
    """The production address policy (no private addresses), names answered by the test's DNS server."""
    return test_settings(
        database_url, tmp_path, push=push_overrides(nameservers=[f"127.0.0.1:{fake_dns.port}"])
    )


def push_overrides(**extra: Any) -> dict[str, Any]:
    return {"timeout_s": 1.0, "poll_s": 0.05, "max_attempts": 3, **extra}


# --- helpers -------------------------------------------------------------------------------------------


async def add(client: TestClient, token: str, url: str) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/v1/push-targets", json={"kind": "webhook", "url": url}, headers=auth(token))
    return resp.status, await resp.json()


async def account_of(client: TestClient, token: str) -> str:
    return str((await (await client.get("/v1/me", headers=auth(token))).json())["id"])


async def insert_target(services: Services, account_id: str, address: str) -> str:
    """A target row as a registration before this fix (or under other settings) left it."""
    target_id = str(uuid.uuid4())
    async with services.engine.begin() as conn:
        await conn.execute(
            insert(push_targets).values(
                id=target_id,
                account_id=account_id,
                kind="webhook",
                address=address,
                created_at=services.clock.now(),
            )
        )
    return target_id


async def last_error(services: Services, outbox_id: int) -> str:
    async with services.engine.connect() as conn:
        row = (await conn.execute(select(push_outbox).where(push_outbox.c.id == outbox_id))).mappings().one()
    return str(row["last_error"] or "")


def errors_by_target(error: str) -> dict[str, str]:
    """``last_error`` ("target <id>: <detail>; …") by target id."""
    pairs = (part.removeprefix("target ").split(": ", 1) for part in error.split("; "))
    return {target: detail for target, detail in pairs}


async def eventually(check: Any, *, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


# --- DNS rebinding -------------------------------------------------------------------------------------


async def test_a_name_rebound_to_loopback_after_registration_gets_no_connection(
    client: TestClient, mailbox: Path, services: Services, fake_dns: FakeDns, receiver: Receiver
) -> None:
    name = "hook.rebind.test"
    fake_dns.point(name, GLOBAL_V4)
    token = await new_user(client, mailbox, "rebind@example.com")
    status, created = await add(client, token, f"http://{name}:{receiver.port}/hook")
    assert status == 201, created

    fake_dns.point(name, "127.0.0.1")  # the attacker's DNS now answers with the gateway's own host
    fake_dns.queries.clear()
    seeded = await seed_event(services.engine, services.clock.now(), await account_of(client, token))

    async def attempted() -> bool:
        return bool(await last_error(services, seeded.outbox_id))

    await eventually(attempted, within_s=10)  # the app's own dispatcher delivers
    assert receiver.connections == 0
    assert errors_by_target(await last_error(services, seeded.outbox_id))[created["id"]].startswith(
        "webhook_address_forbidden"
    )
    # One look-up for the one connection attempt: the address vetted is the address connected to.
    assert fake_dns.queries.count((name, "A")) == 1


# --- every disguised internal address, at registration and at delivery -------------------------------


@pytest.mark.parametrize("form", BLOCKED_FORMS)
async def test_a_blocked_address_form_is_refused_at_registration(
    client: TestClient, mailbox: Path, fake_dns: FakeDns, form: str
) -> None:
    token = await new_user(client, mailbox, "forms@example.com")
    status, problem = await add(client, token, f"https://[{form}]/hook")  # as a literal
    assert (status, problem["code"]) == (422, "webhook_address_forbidden"), problem
    fake_dns.point("inside.example.test", GLOBAL_V4, form)  # as one answer among a name's answers
    status, problem = await add(client, token, "https://inside.example.test/hook")
    assert (status, problem["code"]) == (422, "webhook_address_forbidden"), problem
    assert (await (await client.get("/v1/push-targets", headers=auth(token))).json()) == {"items": []}


@pytest.mark.parametrize("form", BLOCKED_FORMS)
async def test_a_blocked_address_form_is_refused_at_delivery(
    services: Services, fake_dns: FakeDns, form: str
) -> None:
    clock = services.clock
    account = await seed_account(services.engine, clock.now())
    fake_dns.point("rebound.example.test", GLOBAL_V4)
    by_name, _ = await services.push.add_target(account, "webhook", "https://rebound.example.test/hook")
    fake_dns.point("rebound.example.test", form)
    literal = await insert_target(services, account, f"https://[{form}]:8443/hook")
    seeded = await seed_event(services.engine, clock.now(), account)

    assert await services.push.run_once() == 1
    errors = errors_by_target(await last_error(services, seeded.outbox_id))
    assert errors[by_name.id].startswith("webhook_address_forbidden"), errors
    assert errors[literal] == "webhook_address_forbidden", errors


async def test_a_zone_id_is_refused_even_on_a_global_address(client: TestClient, mailbox: Path) -> None:
    token = await new_user(client, mailbox, "zone@example.com")
    for url in ("https://[2606:4700:4700::1111%25eth0]/hook", "https://[fe80::1%25lo]/hook"):
        status, problem = await add(client, token, url)
        assert (status, problem["code"]) == (422, "webhook_address_forbidden"), (url, problem)


# --- https only in production --------------------------------------------------------------------------


def production(database_url: str, tmp_path: Path, **push: Any) -> Settings:
    return test_settings(
        database_url,
        tmp_path,
        environment="production",
        notify={
            "smtp": {"host": "127.0.0.1"},
            "sms_webhook": {"url": "https://127.0.0.1:9/sms"},
            "mailbox_dir": tmp_path / "mailbox",
        },
        push=push_overrides(**push),
    )


async def test_http_registration_is_refused_in_production(
    client: TestClient, mailbox: Path, database_url: str, tmp_path: Path
) -> None:
    token = await new_user(client, mailbox, "prod@example.com")  # signed up on a development instance
    async with AsyncExitStack() as stack:
        prod = await build(production(database_url, tmp_path), stack, clock=ManualClock())
        prod_client = await serve(create_app(prod), stack)
        status, problem = await add(prod_client, token, f"http://{GLOBAL_V4}/hook")
        assert (status, problem["code"]) == (422, "webhook_https_required"), problem
        assert problem["type"] and problem["title"]  # problem+json
        status, created = await add(prod_client, token, f"https://{GLOBAL_V4}/hook")
        assert status == 201, created


async def test_http_delivery_is_refused_in_production(
    database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    clock = ManualClock()
    # Private addresses allowed, so the scheme is the only reason to refuse the local receiver.
    settings = production(database_url, tmp_path, allow_private_addresses=True)
    async with AsyncExitStack() as stack:
        prod = await build(settings, stack, clock=clock)
        account = await seed_account(prod.engine, clock.now())
        target = await insert_target(prod, account, f"http://127.0.0.1:{receiver.port}/hook")
        seeded = await seed_event(prod.engine, clock.now(), account)
        assert await prod.push.run_once() == 1
        assert errors_by_target(await last_error(prod, seeded.outbox_id)) == {
            target: "webhook_https_required"
        }
    assert receiver.connections == 0


# --- a tarpit delays only its own account --------------------------------------------------------------


async def test_a_tarpit_receiver_delays_only_its_own_account(database_url: str, tmp_path: Path) -> None:
    timeout_s = 3.0
    clock = ManualClock()
    settings = test_settings(
        database_url,
        tmp_path,
        push=push_overrides(allow_private_addresses=True, timeout_s=timeout_s, workers=4),
    )
    tarpit = await start(Receiver(answer=False))
    honest = await start(Receiver())
    try:
        async with AsyncExitStack() as stack:
            services = await build(settings, stack, clock=clock)
            attacker = await seed_account(services.engine, clock.now())
            for i in range(4):
                await services.push.add_target(attacker, "webhook", f"http://127.0.0.1:{tarpit.port}/t{i}")
            first = await seed_event(services.engine, clock.now(), attacker)
            for _ in range(5):  # a burst of the attacker's alerts, queued before the victim's
                await seed_event(services.engine, clock.now(), attacker, first.device_id)
            victim = await seed_account(services.engine, clock.now())
            await services.push.add_target(victim, "webhook", f"http://127.0.0.1:{honest.port}/hook")

            stop = asyncio.Event()
            loop = asyncio.create_task(services.push.run_forever(stop))
            try:

                async def hanging() -> bool:
                    return tarpit.open > 0

                await eventually(hanging, within_s=5)
                queued = time.monotonic()
                await seed_event(services.engine, clock.now(), victim)

                async def delivered() -> bool:
                    return bool(honest.requests) or time.monotonic() - queued > timeout_s - 0.5

                await eventually(delivered, within_s=timeout_s)
                assert honest.requests, "the victim's push waited for the attacker's tarpit"
                latency = honest.requests[0] - queued
                assert latency < 1.0, latency
                assert tarpit.open > 0  # the attacker's deliveries were still hanging meanwhile

                # Each hanging delivery ends at its total deadline although the tarpit keeps trickling.
                async def first_wave_ended() -> bool:
                    return len(tarpit.hung_up_after) >= 2

                await eventually(first_wave_ended, within_s=timeout_s + 2)
                assert max(tarpit.hung_up_after) < timeout_s + 0.5, tarpit.hung_up_after
            finally:
                loop.cancel()
                await asyncio.gather(loop, return_exceptions=True)
    finally:
        await shut(tarpit)
        await shut(honest)

"""Schema-driven fuzz of the whole HTTP API (issue 8): schemathesis generates requests for every operation
of the app's own /v1/openapi.json — data that fits the schema and data that does not — and sends them over
real HTTP to the real app, as a real account (with ids of its real device, event, clip, session and
subscription) and unauthenticated. On top of what the schema describes, each operation also gets its
generated requests bent by the hostile-input classes of issue 8: control characters in every string
(body, query, path), bodies nested thousands deep, numbers of thousands of digits, times at the edges of
the UTC range, cursors of the right shape with the wrong content, and Range headers of thousands of
digits. No answer may be a 5xx; every 4xx must be problem+json. Both databases.

The run is bounded (a few examples per operation and mode, well under a minute per database) so that CI
stays fast; ``CAMGATE_FUZZ_EXAMPLES`` raises the count for a longer hunt.
"""

import asyncio
import base64
import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from sqlalchemy import select

from gateway.adapters.db.tables import events, sessions
from gateway.api.app import create_app
from gateway.bootstrap import Services, build
from gateway.services.ingest import Outcome
from tests.integration.conftest import test_settings
from tests.support.api import PASSWORD, last_code, sign_up_body
from tests.support.clock import ManualClock
from tests.support.media import alert
from tests.support.seed import import_fleet, seed_clip, seed_subscription

EXAMPLES = int(os.environ.get("CAMGATE_FUZZ_EXAMPLES", "10"))
PER_MUTATION = max(3, EXAMPLES // 2)
SEED = os.environ.get("CAMGATE_FUZZ_SEED")  # unset: the same examples on every run (derandomized)
IDENTIFIER = "fuzz@example.com"
# Operations that end the caller's session: the fuzz logs in again after them.
ENDS_SESSION = {"log_out", "revoke_session"}


class ServedApp:
    """The real app on a real port, served from an event loop of its own thread, so that schemathesis'
    blocking HTTP client can call it from the test's thread."""

    def __init__(self, settings: Any) -> None:
        self._settings = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fuzzed-app", daemon=True)
        self._stack = AsyncExitStack()
        self.services: Services
        self.base_url = ""

    def run(self, coro: Any) -> Any:
        """Runs a coroutine on the app's loop and returns its result."""
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=120)

    def start(self) -> None:
        """Builds the services and serves the app on a free port."""
        self._thread.start()
        self.run(self._start())

    async def _start(self) -> None:
        self.services = await build(self._settings, self._stack, clock=ManualClock())
        runner = web.AppRunner(create_app(self.services))
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"

    def stop(self) -> None:
        """Stops serving, closes the services and the loop."""
        self.run(self._stack.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


@dataclass
class Account:
    """The fuzzing account: its session token, and ids of things it owns for path parameters."""

    app: ServedApp
    http: requests.Session
    mailbox: Path
    token: str = ""
    ids: dict[str, str] = field(default_factory=dict)

    def log_in(self) -> None:
        """A fresh session token (after the fuzz revoked the last one)."""
        resp = self.http.post(
            f"{self.app.base_url}/v1/sessions", json={"identifier": IDENTIFIER, "password": PASSWORD}
        )
        assert resp.status_code == 201, resp.text
        self.token = resp.json()["token"]
        session = self.app.run(_session_id(self.app.services))
        self.ids["session_id"] = session


async def _session_id(services: Services) -> str:
    async with services.engine.connect() as conn:
        rows = (await conn.execute(select(sessions.c.id).order_by(sessions.c.created_at.desc()))).scalars()
        return str(next(iter(rows)))


def set_up_account(app: ServedApp, mailbox: Path) -> Account:
    """Signs up, confirms and logs in over HTTP; binds a camera with one event, one clip and a trial."""
    http = requests.Session()
    base = app.base_url
    assert http.post(f"{base}/v1/accounts", json=sign_up_body(IDENTIFIER)).status_code == 202
    code = last_code(mailbox, IDENTIFIER)
    assert http.post(
        f"{base}/v1/accounts/confirm", json={"identifier": IDENTIFIER, "code": code, "password": PASSWORD}
    ).ok
    account = Account(app, http, mailbox)
    account.log_in()
    (camera,) = app.run(import_fleet(app.services, 1))
    headers = {"Authorization": f"Bearer {account.token}"}
    bound = http.post(
        f"{base}/v1/devices", json={"serial": camera.serial, "code": camera.code}, headers=headers
    )
    assert bound.status_code == 201, bound.text
    device_id = bound.json()["device"]["id"]
    account_id = http.get(f"{base}/v1/me", headers=headers).json()["id"]

    async def seed() -> tuple[str, str, str]:
        services = app.services
        stored = await services.ingest.handle(f"cam/{camera.serial}/alert", alert("fuzz-1"))
        assert stored is Outcome.STORED
        subscription_id = await seed_subscription(services, account_id, device_id)
        clip_id = await seed_clip(services, account_id, device_id)
        async with services.engine.connect() as conn:
            event_id = str((await conn.execute(select(events.c.id))).scalar_one())
        return event_id, clip_id, subscription_id

    event_id, clip_id, subscription_id = app.run(seed())
    target = http.post(
        f"{base}/v1/push-targets",
        json={"kind": "webhook", "url": "https://1.1.1.1/camgate/hook"},
        headers=headers,
    )
    account.ids.update(
        device_id=device_id,
        event_id=event_id,
        clip_id=clip_id,
        subscription_id=subscription_id,
        target_id=target.json()["id"] if target.status_code == 201 else "",
    )
    return account


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[tuple[ServedApp, Account]]:
    """The served app and its fuzzing account."""
    app = ServedApp(test_settings(database_url, tmp_path))
    app.start()
    try:
        yield app, set_up_account(app, tmp_path / "mailbox")
    finally:
        app.stop()


@dataclass(frozen=True)
class Finding:
    """A response that breaks the contract, with what was sent."""

    operation: str
    how: str
    status: int
    content_type: str
    request: str

    def __str__(self) -> str:
        return f"{self.operation} [{self.how}] -> {self.status} {self.content_type}: {self.request}"


# --- hostile mutations of a generated request ------------------------------------------------------

CONTROL = st.sampled_from(["\x00", "\x01", "\x1b", "\x7f", "\x85", "\n"])
EDGE_TIMES = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]
CURSOR_TIMES = [*EDGE_TIMES, "2026-06-01T12:00:00", "2026-06-01T12:00:00+00:00", "not a time"]
CURSOR_IDS = ["x", "a\x00b", "0" * 36, "9c1b5f0e-3a4b-4c2d-8e9f-0a1b2c3d4e5f"]
DIGITS = "9" * 5_000  # beyond the 4,300 digits int() converts


@dataclass
class Wire:
    """One request as requests sends it; mutations edit it."""

    kwargs: dict[str, Any]

    def raw_body(self, text: str) -> None:
        """Replaces the body with ``text`` sent as JSON."""
        self.kwargs.pop("json", None)
        self.kwargs["data"] = text.encode()
        self.kwargs["headers"] = {**self.kwargs.get("headers", {}), "Content-Type": "application/json"}


def _string_slots(value: Any, where: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths of the strings inside ``value`` (dict keys and list indexes)."""
    if isinstance(value, str):
        return [where]
    if isinstance(value, dict):
        return [slot for k, v in value.items() for slot in _string_slots(v, (*where, k))]
    if isinstance(value, list):
        return [slot for i, v in enumerate(value) for slot in _string_slots(v, (*where, i))]
    return []


def _insert(value: Any, where: tuple[Any, ...], char: str) -> Any:
    if not where:
        return value[: len(value) // 2] + char + value[len(value) // 2 :]
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[where[0]] = _insert(value[where[0]], where[1:], char)
    return copy


def _date_time_params(operation: Any) -> list[str]:
    return [
        p["name"]
        for p in operation.definition.raw.get("parameters", [])
        if p.get("in") == "query" and '"date-time"' in json.dumps(p.get("schema", {}))
    ]


def mutate(operation: Any, case: Any, mutation: str, data: st.DataObject) -> Callable[[Wire], None]:
    """Edits the case (strings) or returns an edit of the wire request (raw bodies, headers)."""
    if mutation == "control characters":
        # One string of the request gets one control character: several at once would mostly be
        # refused by the first validation they meet, before the others reach anything deeper.
        parts = {
            "path_parameters": dict(case.path_parameters or {}),
            "query": dict(case.query or {}),
            "body": case.body if isinstance(case.body, dict | list | str) else None,
        }
        slots = [(part, slot) for part, value in parts.items() for slot in _string_slots(value)]
        if slots:
            part, slot = data.draw(st.sampled_from(slots))
            setattr(case, part, _insert(parts[part], slot, data.draw(CONTROL)))
    elif mutation == "edge times":
        names = _date_time_params(operation)
        if names:  # without a cursor, which would be refused before the time reaches the database
            case.query = {k: v for k, v in (case.query or {}).items() if k != "cursor"}
            case.query = {
                **(case.query or {}),
                data.draw(st.sampled_from(names)): data.draw(st.sampled_from(EDGE_TIMES)),
            }
    elif mutation == "huge numbers" and case.query:
        # One query parameter too: ids, limits and cursors that are numbers reach int() and the driver.
        case.query = {**case.query, data.draw(st.sampled_from(sorted(case.query))): DIGITS[:30]}
    elif mutation == "cursor" and any(
        p["name"] == "cursor" for p in operation.definition.raw.get("parameters", [])
    ):
        text = f"{data.draw(st.sampled_from(CURSOR_TIMES))}|{data.draw(st.sampled_from(CURSOR_IDS))}"
        case.query = {**(case.query or {}), "cursor": base64.urlsafe_b64encode(text.encode()).decode()}

    def edit(wire: Wire) -> None:
        fields = list(case.body) if isinstance(case.body, dict) and case.body else ["x"]
        if mutation == "deep nesting":
            depth = data.draw(st.sampled_from([1_000, 5_000, 30_000]))
            wire.raw_body("{" + json.dumps(fields[0]) + ": " + "[" * depth + "]" * depth + "}")
        elif mutation == "huge numbers":
            wire.raw_body("{" + ", ".join(f"{json.dumps(f)}: {DIGITS}" for f in fields) + "}")
        elif mutation == "range":
            value = data.draw(st.sampled_from([f"bytes={DIGITS}-", f"bytes=-{DIGITS}", f"bytes=0-{DIGITS}"]))
            wire.kwargs["headers"] = {**wire.kwargs.get("headers", {}), "Range": value}

    return edit


MUTATIONS = [
    "control characters",
    "deep nesting",
    "huge numbers",
    "edge times",
    "cursor",
    "range",
]


# --- the run ----------------------------------------------------------------------------------------


def _describe(response: requests.Response) -> str:
    request = response.request
    body = request.body or b""
    if isinstance(body, bytes):
        body = body[:200].decode("utf-8", "backslashreplace")
    headers = {
        k: v[:80]
        for k, v in request.headers.items()
        if k not in ("User-Agent", "Accept", "Accept-Encoding", "Connection")
    }
    return f"{request.method} {str(request.url)[:300]} headers={headers} body={str(body)[:200]!r}"


def check(response: requests.Response, operation: str, how: str, findings: list[Finding]) -> None:
    """Records a 5xx, or a 4xx that is not problem+json."""
    status = response.status_code
    content_type = response.headers.get("Content-Type", "")
    if status >= 500 or (status >= 400 and not content_type.startswith("application/problem+json")):
        findings.append(Finding(operation, how, status, content_type, _describe(response)))


def fuzz_operation(operation: Any, account: Account, findings: list[Finding]) -> None:
    """Sends generated cases of each mode and each mutation, with the real token and without."""
    name = operation.definition.raw.get("operationId", operation.label)
    path_ids = {p: account.ids[p] for p in re.findall(r"{(\w+)}", operation.path) if account.ids.get(p)}
    real = {"path_parameters": path_ids} if path_ids else {}
    runs: list[tuple[str, Any, str | None, int]] = [
        ("positive", operation.as_strategy(GenerationMode.POSITIVE), None, EXAMPLES),
        ("negative", operation.as_strategy(GenerationMode.NEGATIVE), None, EXAMPLES),
    ]
    if path_ids:
        runs.append(("real ids", operation.as_strategy(GenerationMode.POSITIVE, **real), None, EXAMPLES))
    for mutation in MUTATIONS:
        runs.append(
            (mutation, operation.as_strategy(GenerationMode.POSITIVE, **real), mutation, PER_MUTATION)
        )
    for how, strategy, mutation, examples in runs:
        fuzz_run(operation, name, account, findings, how, strategy, mutation, examples)


def fuzz_run(
    operation: Any,
    name: str,
    account: Account,
    findings: list[Finding],
    how: str,
    strategy: Any,
    mutation: str | None,
    examples: int,
) -> None:
    """``examples`` cases of one strategy, each bent by ``mutation`` (if any), sent and checked."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=SEED is None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    # Mutated requests always carry the token: an anonymous one would stop at the 401.
    @given(case=strategy, authenticated=st.just(True) if mutation else st.booleans(), data=st.data())
    def send(case: Any, authenticated: bool, data: st.DataObject) -> None:
        edit = mutate(operation, case, mutation, data) if mutation else None
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        if authenticated:
            headers["Authorization"] = f"Bearer {account.token}"
        case.headers = headers
        wire = Wire(case.as_transport_kwargs(base_url=account.app.base_url))
        if edit is not None:
            edit(wire)
        label = f"{how}, {'token' if authenticated else 'anonymous'}"
        try:
            response = account.http.request(**wire.kwargs, timeout=30, allow_redirects=False)
        except requests.ConnectionError as exc:  # no answer at all: as bad as a 5xx
            request = f"{wire.kwargs['method']} {wire.kwargs['url']}: {exc}"
            findings.append(Finding(name, label, 0, "", request))
            return
        check(response, name, label, findings)
        if name in ENDS_SESSION and response.status_code == 204:
            account.log_in()

    if SEED is not None:
        send = seed(int(SEED))(send)
    try:
        send()
    except Unsatisfiable:  # an operation without parameters has no negative case
        assert how == "negative", (name, how)


# Hypothesis blames a strategy when the global random state moves while it draws: here the app's own
# background jobs, in the server thread, draw jitter from it at the same time.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
def test_no_request_generated_from_the_openapi_document_gets_a_5xx(
    served: tuple[ServedApp, Account],
) -> None:
    app, account = served
    document = account.http.get(f"{app.base_url}/v1/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 40, [op.label for op in operations]
    # Deletions last, so that the operations on a device, event or clip find it still there.
    operations.sort(key=lambda op: op.method.upper() == "DELETE")
    findings: list[Finding] = []
    for operation in operations:
        fuzz_operation(operation, account, findings)
    distinct = sorted({(f.operation, f.how.split(",")[0], f.status) for f in findings})
    assert not findings, f"{len(findings)} bad answers; kinds: {distinct}\n" + "\n".join(
        str(f) for f in findings[:15]
    )

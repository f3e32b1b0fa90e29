"""Push notifications: each account's push targets, and the outbox dispatcher that delivers alerts to them.

The ingest service writes one ``push_outbox`` row per event in the event's own transaction. Dispatchers
(one per gateway instance, any number of instances) claim due rows with a conditional UPDATE that sets a
lease (``claimed_by`` / ``claimed_until``), so two instances never work on one row at once; a crashed
instance's lease simply runs out. Each success is recorded in ``push_deliveries`` before the row moves on,
so a target that got an event never gets it again, across retries and restarts. Failed rows come back
after an exponential backoff with full jitter, or after the receiver's Retry-After when that is longer,
and are given up after ``push.max_attempts``. A target whose provider says it is gone is removed.

Receivers are untrusted: one may accept the connection and never answer (a tarpit). Each delivery has a
total deadline (``push.timeout_s``), and an instance keeps at most ``push.per_account_concurrency`` rows
and deliveries of one account in flight, so a slow receiver only delays its own account's pushes: the
loop claims new rows while others are still being delivered, skipping accounts already at their bound.
"""

import asyncio
import logging
import os
import random
import secrets
import socket
import time
import uuid
from collections import Counter as Tally
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from prometheus_client import Counter, Histogram
from sqlalchemy import RowMapping, case, delete, func, insert, literal, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.adapters.db.tables import devices, events, push_deliveries, push_outbox, push_targets
from gateway.config import PushSettings, Settings
from gateway.errors import Conflict, InvalidRequest, NotFound
from gateway.ports import (
    Clock,
    DeliveryOutcome,
    DeliveryResult,
    Notification,
    PushProvider,
    PushTarget,
)
from gateway.services import audit
from storage import StorageError, StoreRouter

log = logging.getLogger(__name__)

MAX_TARGETS_PER_ACCOUNT = 10
MAX_RETRY_AFTER_S = 86400.0  # a receiver asking for more than a day is not waited for beyond that
_ERROR_LENGTH = 500  # push_outbox.last_error

DELIVERIES = Counter(
    "camgate_push_deliveries", "Push delivery attempts by provider and outcome.", ["provider", "outcome"]
)
GIVEN_UP = Counter("camgate_push_given_up", "Outbox rows abandoned after push.max_attempts.")
DELIVERY_SECONDS = Histogram(
    "camgate_push_delivery_seconds", "Time one push delivery took, by provider.", ["provider"]
)


def full_jitter(ceiling: float) -> float:
    """A uniformly random wait in [0, ceiling] (AWS's "full jitter")."""
    return random.uniform(0.0, ceiling)


def backoff_s(attempt: int, settings: PushSettings, jitter: Callable[[float], float] = full_jitter) -> float:
    """The wait after failed attempt number ``attempt`` (1-based): jittered, doubling, capped."""
    exponent = min(max(attempt - 1, 0), 60)  # 2**60 already dwarfs any cap; avoids float overflow
    return jitter(min(settings.backoff_max_s, settings.backoff_base_s * 2.0**exponent))


def retry_delay_s(
    attempt: int,
    failures: list[DeliveryResult],
    settings: PushSettings,
    jitter: Callable[[float], float] = full_jitter,
) -> float:
    """The backoff, or the longest Retry-After a receiver asked for when that is longer."""
    delay = backoff_s(attempt, settings, jitter)
    asked = [f.retry_after_s for f in failures if f.retry_after_s is not None]
    if asked:
        delay = max(delay, min(max(asked), MAX_RETRY_AFTER_S))
    return delay


@dataclass(frozen=True)
class Claim:
    """An outbox row this dispatcher holds the lease on; ``token`` proves it when settling."""

    id: int
    event_id: str
    account_id: str
    created_at: datetime
    attempts: int
    token: str


@dataclass(frozen=True)
class _Event:
    id: str
    device_id: str
    device_name: str
    kind: str
    captured_at: datetime
    region: str
    thumbnail_key: str


class PushService:
    """Push targets of an account (add, list, remove) and the outbox dispatcher of one gateway instance."""

    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        clock: Clock,
        providers: Mapping[str, PushProvider],
        stores: StoreRouter,
        *,
        instance: str | None = None,
        jitter: Callable[[float], float] = full_jitter,
    ) -> None:
        self._db = engine
        self._settings = settings.push
        self._clock = clock
        self._providers = dict(providers)
        self._stores = stores
        self._jitter = jitter
        # claimed_by is 64 characters: the instance name, "/" and a 12-character claim token.
        self._instance = (instance or f"{socket.gethostname()}:{os.getpid()}")[:51]
        self._slots = asyncio.Semaphore(self._settings.workers)
        self._loops: dict[asyncio.Event, asyncio.Event] = {}  # each running loop's stop → its "done"
        # Rows in flight by account, and each such account's delivery slots (per_account_concurrency).
        self._rows_in_flight: Tally[str] = Tally()
        self._account_slots: dict[str, asyncio.Semaphore] = {}
        self._claiming = asyncio.Lock()  # claims see each other's rows in flight
        self._settled = asyncio.Event()  # a row finished: capacity to claim more
        # An account's rows (at most c of them, up to 10 targets each) share its c delivery slots: 10
        # waves, each a deadline sending plus, at worst, c - 1 deadlines waiting for a `workers` slot
        # (no more than c deliveries of each account in flight contend for them). The lease covers that.
        c = self._settings.per_account_concurrency
        self._lease = timedelta(seconds=self._settings.timeout_s * (MAX_TARGETS_PER_ACCOUNT * c + 1))

    # --- targets ---------------------------------------------------------------------------------

    async def add_target(
        self, account_id: str, kind: str, address: str, *, client_address: str = ""
    ) -> tuple[PushTarget, str | None]:
        """Registers a target after the provider checked its address; returns it with its one-time secret."""
        provider = self._provider(kind)
        normalised = await provider.check_address(address)
        target = PushTarget(str(uuid.uuid4()), account_id, kind, normalised, self._clock.now())
        async with self._db.begin() as conn:
            count = await conn.scalar(
                select(func.count()).select_from(push_targets).where(push_targets.c.account_id == account_id)
            )
            if (count or 0) >= MAX_TARGETS_PER_ACCOUNT:
                raise Conflict(
                    "push_target_limit",
                    f"an account can have at most {MAX_TARGETS_PER_ACCOUNT} push targets; remove one first",
                )
            duplicate = await conn.scalar(
                select(push_targets.c.id).where(
                    push_targets.c.account_id == account_id,
                    push_targets.c.kind == kind,
                    push_targets.c.address == normalised,
                )
            )
            if duplicate is not None:
                raise Conflict("push_target_exists", "this address is already a push target of yours")
            await conn.execute(
                insert(push_targets).values(
                    id=target.id,
                    account_id=account_id,
                    kind=kind,
                    address=normalised,
                    created_at=target.created_at,
                )
            )
            await audit.record(
                conn,
                account_id=account_id,
                actor=f"account:{account_id}",
                action="push_target.added",
                target_type="push_target",
                target_id=target.id,
                detail={"kind": kind},
                at=target.created_at,
                address=client_address,
            )
        return target, provider.secret_for(target.id)

    async def list_targets(self, account_id: str) -> list[PushTarget]:
        """The account's targets, oldest first; no secrets."""
        async with self._db.connect() as conn:
            rows = await conn.execute(
                select(push_targets)
                .where(push_targets.c.account_id == account_id)
                .order_by(push_targets.c.created_at, push_targets.c.id)
            )
            return [_target(r) for r in rows.mappings()]

    async def remove_target(self, account_id: str, target_id: str, *, client_address: str = "") -> None:
        """Removes one of the account's targets; another account's target is NotFound, like a missing one."""
        async with self._db.begin() as conn:
            result = await conn.execute(
                delete(push_targets).where(
                    push_targets.c.id == target_id, push_targets.c.account_id == account_id
                )
            )
            if result.rowcount == 0:
                raise NotFound("push_target_not_found", "no such push target")
            await audit.record(
                conn,
                account_id=account_id,
                actor=f"account:{account_id}",
                action="push_target.removed",
                target_type="push_target",
                target_id=target_id,
                detail={"reason": "owner"},
                at=self._clock.now(),
                address=client_address,
            )

    def _provider(self, kind: str) -> PushProvider:
        try:
            return self._providers[kind]
        except KeyError:
            raise InvalidRequest(
                "push_kind_unsupported", f"push targets of kind {kind!r} are not supported"
            ) from None

    # --- dispatcher ------------------------------------------------------------------------------

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Dispatches until ``stop`` is set (or ``aclose``): claims due rows whenever there is capacity,
        without waiting for the rows in flight; polls every ``push.poll_s`` while idle."""
        done = self._loops[stop] = asyncio.Event()
        rows: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                self._settled.clear()
                try:
                    claims = await self._claim()
                except Exception:
                    log.exception("push dispatch failed; retrying in %.1f s", self._settings.poll_s)
                    claims = []
                for claim in claims:
                    task = asyncio.create_task(self._run(claim))
                    rows.add(task)
                    task.add_done_callback(rows.discard)
                if not claims:  # nothing due, or no capacity: wait for a row to finish or the next poll
                    await _first_of(stop, self._settled, timeout_s=self._settings.poll_s)
            # Stopped: the deliveries in flight finish (each within its deadline).
            await asyncio.gather(*rows, return_exceptions=True)
        except BaseException:
            for task in rows:  # cancelled: so are the deliveries; their leases run out
                task.cancel()
            raise
        finally:
            del self._loops[stop]
            done.set()

    async def aclose(self) -> None:
        """Stops the running loops and waits for their deliveries in flight, then closes the providers;
        runs before the engine closes, so no loop touches a disposed engine whatever order the app and
        the services stop in."""
        loops = list(self._loops.items())
        for stop, _ in loops:
            stop.set()
        for _, done in loops:
            await done.wait()
        for provider in self._providers.values():
            close = getattr(provider, "aclose", None)  # providers with a session of their own
            if close is not None:
                await close()

    async def run_once(self) -> int:
        """Claims the due outbox rows there is capacity for (up to ``push.workers``, at most
        ``push.per_account_concurrency`` per account), delivers them; returns how many it handled."""
        claims = await self._claim()
        await asyncio.gather(*(self._run(c) for c in claims))
        return len(claims)

    async def _run(self, claim: Claim) -> None:
        try:
            await self._handle(claim)
        except Exception:
            # The lease runs out and the row is tried again; deliveries already recorded stay done.
            log.exception("push outbox row %d failed", claim.id)
        finally:
            self._rows_in_flight[claim.account_id] -= 1
            if self._rows_in_flight[claim.account_id] <= 0:
                del self._rows_in_flight[claim.account_id]
                del self._account_slots[claim.account_id]
            self._settled.set()

    async def _claim(self) -> list[Claim]:
        async with self._claiming:
            free = self._settings.workers - self._rows_in_flight.total()
            if free <= 0:
                return []
            claims = await self._claim_rows(free)
            per_account = self._settings.per_account_concurrency
            for claim in claims:
                self._rows_in_flight[claim.account_id] += 1
                self._account_slots.setdefault(claim.account_id, asyncio.Semaphore(per_account))
            return claims

    async def _claim_rows(self, limit: int) -> list[Claim]:
        now = self._clock.now()
        token = f"{self._instance}/{secrets.token_hex(6)}"
        per_account = self._settings.per_account_concurrency
        full = [a for a, n in self._rows_in_flight.items() if n >= per_account]
        due = (
            push_outbox.c.done_at.is_(None),
            push_outbox.c.next_attempt_at <= now,
            or_(push_outbox.c.claimed_until.is_(None), push_outbox.c.claimed_until < now),
        )
        candidates = (
            select(push_outbox.c.id, push_outbox.c.account_id, push_outbox.c.next_attempt_at)
            .where(*due)
            .order_by(push_outbox.c.next_attempt_at, push_outbox.c.id)
            .limit(limit)
        )
        if full:
            candidates = candidates.where(push_outbox.c.account_id.not_in(full))
        if self._db.dialect.name == "postgresql":
            # Instances skip each other's rows instead of queueing behind their locks.
            candidates = candidates.with_for_update(skip_locked=True)
        # CTEs, not a plain IN (subquery): PostgreSQL may re-run such a subquery, and with SKIP LOCKED
        # each re-run skips the rows just locked and takes the next ones, ignoring the LIMIT.
        locked = candidates.cte("due_rows")
        # Of one account, only as many rows as it has room for in this instance: a burst of one
        # account's rows does not take the batch.
        rank = func.row_number().over(
            partition_by=locked.c.account_id, order_by=(locked.c.next_attempt_at, locked.c.id)
        )
        ranked = select(locked.c.id, locked.c.account_id, rank.label("rank")).cte("ranked")
        room = {a: per_account - n for a, n in self._rows_in_flight.items() if n < per_account}
        allowance = case(room, value=ranked.c.account_id, else_=per_account) if room else literal(per_account)
        batch = select(ranked.c.id).where(ranked.c.rank <= allowance).cte("due_batch")
        # One statement: SQLite runs it under its write lock, PostgreSQL re-checks `due` on the row it
        # locked, so of two instances racing for a row exactly one gets it.
        claim = (
            update(push_outbox)
            .where(push_outbox.c.id.in_(select(batch.c.id)), *due)
            .values(claimed_by=token, claimed_until=now + self._lease)
            .returning(
                push_outbox.c.id,
                push_outbox.c.event_id,
                push_outbox.c.account_id,
                push_outbox.c.created_at,
                push_outbox.c.attempts,
            )
        )
        async with self._db.begin() as conn:
            rows = (await conn.execute(claim)).all()
        return [Claim(r.id, r.event_id, r.account_id, r.created_at, r.attempts, token) for r in rows]

    async def _handle(self, claim: Claim) -> None:
        async with self._db.connect() as conn:
            event_row = (
                await conn.execute(
                    select(
                        events.c.id,
                        events.c.device_id,
                        devices.c.name.label("device_name"),
                        events.c.kind,
                        events.c.captured_at,
                        events.c.region,
                        events.c.thumbnail_key,
                    )
                    .join(devices, devices.c.id == events.c.device_id)
                    .where(events.c.id == claim.event_id)
                )
            ).first()
            # Targets registered after the event was queued do not get it.
            target_rows = await conn.execute(
                select(push_targets)
                .where(
                    push_targets.c.account_id == claim.account_id,
                    push_targets.c.created_at <= claim.created_at,
                )
                .order_by(push_targets.c.created_at, push_targets.c.id)
            )
            targets = [_target(r) for r in target_rows.mappings()]
            delivered = set(
                (
                    await conn.scalars(
                        select(push_deliveries.c.target_id).where(push_deliveries.c.outbox_id == claim.id)
                    )
                ).all()
            )
        pending = [t for t in targets if t.id not in delivered]
        if event_row is None or not pending:
            await self._settle(claim, [])
            return
        event = _Event(*event_row)
        notification = await self._notification(claim, event)
        results = await asyncio.gather(*(self._deliver(claim, t, notification) for t in pending))
        failures = [
            (t, r) for t, r in zip(pending, results, strict=True) if r.outcome is DeliveryOutcome.RETRY
        ]
        await self._settle(claim, failures)

    async def _notification(self, claim: Claim, event: _Event) -> Notification:
        return Notification(
            delivery_id=str(claim.id),
            event_id=event.id,
            device_id=event.device_id,
            device_name=event.device_name,
            kind=event.kind,
            captured_at=event.captured_at,
            thumbnail_url=await self._thumbnail_url(event),
        )

    async def _thumbnail_url(self, event: _Event) -> str:
        # The API path serves the thumbnail to its owner when the store cannot sign a link (local folder).
        fallback = f"/v1/events/{event.id}/thumbnail"
        try:
            store = self._stores.for_region(event.region)
            url = await store.presigned_get_url(event.thumbnail_key, self._settings.thumbnail_link_ttl_s)
        except (StorageError, ValueError) as exc:  # ValueError: a TTL the backend cannot sign for
            log.warning("no thumbnail link for event %s: %s", event.id, exc)
            return fallback
        return url or fallback

    async def _deliver(self, claim: Claim, target: PushTarget, notification: Notification) -> DeliveryResult:
        provider = self._providers.get(target.kind)
        # The account's slot first: deliveries waiting for it hold none of the `workers` slots.
        async with self._account_slots[claim.account_id], self._slots:
            started = time.perf_counter()
            if provider is None:
                result = DeliveryResult(DeliveryOutcome.RETRY, None, f"no provider for {target.kind}")
            else:
                try:
                    # The provider's own timeouts are not trusted to bound it: this deadline does.
                    async with asyncio.timeout(self._settings.timeout_s):
                        result = await provider.send(target, notification)
                except TimeoutError:
                    result = DeliveryResult(DeliveryOutcome.RETRY, None, "timeout")
                except Exception as exc:  # a provider bug must not take the other targets down
                    log.exception("push provider %s failed on target %s", target.kind, target.id)
                    result = DeliveryResult(DeliveryOutcome.RETRY, None, type(exc).__name__)
            DELIVERY_SECONDS.labels(target.kind).observe(time.perf_counter() - started)
        DELIVERIES.labels(target.kind, result.outcome.value).inc()
        if result.outcome is DeliveryOutcome.DELIVERED:
            await self._record_delivery(claim, target, result)
        elif result.outcome is DeliveryOutcome.GONE:
            await self._remove_dead(target, result)
        return result

    async def _record_delivery(self, claim: Claim, target: PushTarget, result: DeliveryResult) -> None:
        try:
            async with self._db.begin() as conn:
                await conn.execute(
                    insert(push_deliveries).values(
                        outbox_id=claim.id,
                        target_id=target.id,
                        delivered_at=self._clock.now(),
                        status=result.status or 0,
                    )
                )
        except IntegrityError:
            # Recorded already (a lease that ran out mid-delivery), or the target was removed meanwhile.
            log.info("delivery of outbox row %d to target %s not recorded twice", claim.id, target.id)

    async def _remove_dead(self, target: PushTarget, result: DeliveryResult) -> None:
        async with self._db.begin() as conn:
            removed = await conn.execute(delete(push_targets).where(push_targets.c.id == target.id))
            if removed.rowcount:
                await audit.record(
                    conn,
                    account_id=target.account_id,
                    actor="system",
                    action="push_target.removed",
                    target_type="push_target",
                    target_id=target.id,
                    detail={"reason": "gone", "status": result.status},
                    at=self._clock.now(),
                )
        log.info("removed push target %s: the receiver answered %s", target.id, result.detail)

    async def _settle(self, claim: Claim, failures: list[tuple[PushTarget, DeliveryResult]]) -> None:
        now = self._clock.now()
        attempts = claim.attempts + 1
        values: dict[str, object] = {"attempts": attempts, "claimed_by": None, "claimed_until": None}
        error = "; ".join(f"target {t.id}: {r.detail}" for t, r in failures)[:_ERROR_LENGTH]
        if not failures:
            values.update(done_at=now, last_error=None)
        elif attempts >= self._settings.max_attempts:
            values.update(done_at=now, last_error=error)
            GIVEN_UP.inc()
            log.warning("push outbox row %d given up after %d attempts: %s", claim.id, attempts, error)
        else:
            delay = retry_delay_s(attempts, [r for _, r in failures], self._settings, self._jitter)
            values.update(next_attempt_at=now + timedelta(seconds=delay), last_error=error)
        async with self._db.begin() as conn:
            # Only while we still hold the lease: a row another instance took over is left to it.
            await conn.execute(
                update(push_outbox)
                .where(push_outbox.c.id == claim.id, push_outbox.c.claimed_by == claim.token)
                .values(**values)
            )


def _target(row: RowMapping) -> PushTarget:
    return PushTarget(row["id"], row["account_id"], row["kind"], row["address"], row["created_at"])


async def _first_of(*events: asyncio.Event, timeout_s: float) -> None:
    """Returns when any of ``events`` is set, or after ``timeout_s``."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()

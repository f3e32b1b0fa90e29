"""Push notifications: each account's push targets, and the outbox dispatcher that delivers alerts to them.

The ingest service writes one ``push_outbox`` row per event in the event's own transaction. Dispatchers
(one per gateway instance, any number of instances) claim due rows with a conditional UPDATE that sets a
lease (``claimed_by`` / ``claimed_until``), so two instances never work on one row at once; a crashed
instance's lease simply runs out. Each success is recorded in ``push_deliveries`` before the row moves on,
so a target that got an event never gets it again, across retries and restarts. Failed rows come back
after an exponential backoff with full jitter, or after the receiver's Retry-After when that is longer,
and are given up after ``push.max_attempts``. A target whose provider says it is gone is removed.
"""

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from prometheus_client import Counter, Histogram
from sqlalchemy import RowMapping, delete, func, insert, or_, select, update
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
        # A row's targets are sent concurrently but share `workers` slots with the batch's other rows,
        # and each send may spend a timeout resolving and another one posting: the lease covers that.
        self._lease = timedelta(seconds=2 * self._settings.timeout_s * (MAX_TARGETS_PER_ACCOUNT + 1))

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
        """Dispatches until ``stop`` is set (or ``aclose``), polling every ``push.poll_s`` while idle."""
        done = self._loops[stop] = asyncio.Event()
        try:
            while not stop.is_set():
                try:
                    handled = await self.run_once()
                except Exception:
                    log.exception("push dispatch failed; retrying in %.1f s", self._settings.poll_s)
                    handled = 0
                if handled == 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self._settings.poll_s)
        finally:
            del self._loops[stop]
            done.set()

    async def aclose(self) -> None:
        """Stops the running loops and waits for their deliveries in flight; runs before the engine
        closes, so no loop touches a disposed engine whatever order the app and the services stop in."""
        loops = list(self._loops.items())
        for stop, _ in loops:
            stop.set()
        for _, done in loops:
            await done.wait()

    async def run_once(self) -> int:
        """Claims the due outbox rows (up to ``push.workers``), delivers them; returns how many it handled."""
        claims = await self._claim()
        results = await asyncio.gather(*(self._handle(c) for c in claims), return_exceptions=True)
        for claim, result in zip(claims, results, strict=True):
            if isinstance(result, BaseException):
                # The lease runs out and the row is tried again; deliveries already recorded stay done.
                log.error("push outbox row %d failed", claim.id, exc_info=result)
        return len(claims)

    async def _claim(self) -> list[Claim]:
        now = self._clock.now()
        token = f"{self._instance}/{secrets.token_hex(6)}"
        due = (
            push_outbox.c.done_at.is_(None),
            push_outbox.c.next_attempt_at <= now,
            or_(push_outbox.c.claimed_until.is_(None), push_outbox.c.claimed_until < now),
        )
        candidates = (
            select(push_outbox.c.id)
            .where(*due)
            .order_by(push_outbox.c.next_attempt_at, push_outbox.c.id)
            .limit(self._settings.workers)
        )
        if self._db.dialect.name == "postgresql":
            # Instances skip each other's rows instead of queueing behind their locks.
            candidates = candidates.with_for_update(skip_locked=True)
        # A CTE, not a plain IN (subquery): PostgreSQL may re-run such a subquery, and with SKIP LOCKED
        # each re-run skips the rows just locked and takes the next ones, ignoring the LIMIT.
        batch = candidates.cte("due_batch")
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
        async with self._slots:
            started = time.perf_counter()
            if provider is None:
                result = DeliveryResult(DeliveryOutcome.RETRY, None, f"no provider for {target.kind}")
            else:
                try:
                    result = await provider.send(target, notification)
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

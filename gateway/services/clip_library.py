"""The owner's view of event clips: list, detail, playback and deletion, served only while the device's
plan is in force (terms 8.1: after the paid period ends, recordings are no longer accessible — even
before the sweep has removed them)."""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.adapters.db.tables import clips, devices
from gateway.domain.plans import Catalogue
from gateway.errors import NotFound, PaymentRequired, Unavailable
from gateway.ports import Clock
from gateway.services import audit
from gateway.services.coverage import coverage_at
from gateway.services.events import newest_first, page_of
from gateway.services.media_links import present_link
from storage import StoreRouter


@dataclass(frozen=True)
class Clip:
    id: str
    device_id: str
    event_id: str | None
    content_type: str
    bytes: int
    frames: int | None
    width: int | None
    height: int | None
    plan_id: str
    captured_at: datetime
    received_at: datetime
    retain_until: datetime
    region: str
    key: str


@dataclass(frozen=True)
class Playback:
    """Where to play a clip from: a short-lived URL, or the bytes when the store has no URLs."""

    url: str | None
    data: bytes | None
    content_type: str


def _clip(row: object) -> Clip:
    return Clip(**{name: getattr(row, name) for name in Clip.__dataclass_fields__})


class PlanInactive(PaymentRequired):
    """The device has no plan in force: its recordings are kept until swept but not served."""


class ClipLibrary:
    """Clips are always read through their owner, and only while the device's plan is in force."""

    def __init__(self, engine: AsyncEngine, stores: StoreRouter, catalogue: Catalogue, clock: Clock) -> None:
        self._db = engine
        self._stores = stores
        self._catalogue = catalogue
        self._clock = clock

    async def page(
        self,
        account_id: str,
        *,
        device_id: str | None,
        since: datetime | None,
        until: datetime | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[Clip], str | None]:
        """Newest first. With ``device_id``, ``PlanInactive`` when its plan has ended; without, clips of
        devices whose plan has ended are left out."""
        query = select(clips).where(clips.c.account_id == account_id)
        if device_id is not None:
            query = query.where(clips.c.device_id == device_id)
        async with self._db.connect() as conn:
            if device_id is not None:
                await self._device_of(conn, account_id, device_id)
                if not await self._allowed(conn, account_id, device_id):
                    raise _inactive(device_id)
            devices = (
                await conn.execute(
                    select(clips.c.device_id).where(clips.c.account_id == account_id).distinct()
                )
            ).scalars()
            allowed = [d for d in devices if await self._allowed(conn, account_id, d)]
            query = newest_first(
                query.where(clips.c.device_id.in_(allowed)),
                clips,
                since=since,
                until=until,
                cursor=cursor,
                limit=limit,
            )
            rows = [_clip(r) for r in await conn.execute(query)]
        return page_of(rows, limit)

    async def get(self, account_id: str, clip_id: str) -> Clip:
        """One of the account's clips; ``PlanInactive`` once the device's plan has ended."""
        async with self._db.connect() as conn:
            clip = await self._owned(conn, account_id, clip_id)
            if not await self._allowed(conn, account_id, clip.device_id):
                raise _inactive(clip.device_id)
        return clip

    async def playback(self, account_id: str, clip_id: str, ttl_s: int) -> Playback:
        """A short-lived URL of the clip, or its bytes (local store); gated like ``get``."""
        clip = await self.get(account_id, clip_id)
        store = self._stores.for_region(clip.region)
        url = await present_link(store, clip.key, ttl_s)
        if url is not None:
            return Playback(url, None, clip.content_type)
        return Playback(None, await store.get(clip.key), clip.content_type)

    async def delete(self, account_id: str, clip_id: str, *, address: str) -> None:
        """Deletes a clip and every version of its object. Allowed after the plan ended too: what is
        the account's own it may always erase."""
        async with self._db.connect() as conn:
            clip = await self._owned(conn, account_id, clip_id)
        report = await self._stores.for_region(clip.region).delete_many([clip.key])
        if not report.ok:
            raise Unavailable(
                "delete_incomplete", "the clip could not be deleted yet; try again", retry_after=30
            )
        async with self._db.begin() as conn:
            await conn.execute(delete(clips).where(clips.c.id == clip_id, clips.c.account_id == account_id))
            await audit.record(
                conn,
                account_id=account_id,
                actor=f"account:{account_id}",
                action="clip.deleted",
                target_type="clip",
                target_id=clip_id,
                at=self._clock.now(),
                address=address,
            )

    async def _owned(self, conn: AsyncConnection, account_id: str, clip_id: str) -> Clip:
        row = (
            await conn.execute(select(clips).where(clips.c.id == clip_id, clips.c.account_id == account_id))
        ).first()
        if row is None:
            raise NotFound("clip_not_found", "no such clip")
        return _clip(row)

    async def _device_of(self, conn: AsyncConnection, account_id: str, device_id: str) -> None:
        # A device is the account's to ask about when it owns it now or has clips of it (kept until
        # swept after an unbind); anything else answers as if it did not exist.
        owned = await conn.scalar(
            select(devices.c.id).where(devices.c.id == device_id, devices.c.owner_account_id == account_id)
        )
        if (
            owned is None
            and await conn.scalar(
                select(clips.c.id)
                .where(clips.c.device_id == device_id, clips.c.account_id == account_id)
                .limit(1)
            )
            is None
        ):
            raise NotFound("device_not_found", "no such device")

    async def _allowed(self, conn: AsyncConnection, account_id: str, device_id: str) -> bool:
        # The plan must be in force now and include video; clips captured under it stay until swept.
        return (
            await coverage_at(conn, self._catalogue, device_id, account_id, self._clock.now())
        ).retention.video


def _inactive(device_id: str) -> PlanInactive:
    return PlanInactive(
        "plan_inactive",
        f"device {device_id} has no cloud plan with video in force: its recordings are not available"
        " (buy or renew a plan)",
    )

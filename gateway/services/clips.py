"""Clip ingest (docs/clips.md): the parts of a clip are staged in the database until the set is complete,
then the clip becomes one object in the account's region and one ``clips`` row.

Each part is committed to ``clip_parts`` before ``handle`` returns and the caller acknowledges it only then,
so a crash loses nothing, and a redelivered part is a no-op (insert-ignore on (upload, part)). The first
part decides for the whole clip (owner's settings, a plan with video at capture and now, retention,
limits) and the ``clip_uploads`` row keeps the decision, so later parts follow it without deciding
again. The part that completes the set assembles the clip: the object is created once under a key
derived from the camera's clip id and the row inserted once, so two assemblies of one clip still make
one of each.
"""

import asyncio
import logging
import uuid
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway import metrics
from gateway.adapters.db.dialect import insert_ignore
from gateway.adapters.db.tables import clip_uploads, clips
from gateway.adapters.video import BadClip, VideoWorkers, frame_size
from gateway.config import ClipSettings
from gateway.domain.alerts import DEFAULT_MAX_SKEW, TokenBuckets, before_binding
from gateway.domain.clips import (
    STORED_AS,
    ClipDrop,
    admission,
    looks_like,
    mismatch,
    object_key,
    opted_out,
    retain_from,
    retain_until,
)
from gateway.domain.plans import Catalogue, Retention
from gateway.ports import Clock
from gateway.services import clip_staging as staging
from gateway.services.clip_staging import DROPPED, RECEIVING, Upload
from gateway.services.coverage import coverage_at, quota_bytes, usage
from gateway.services.failures import Failure, classify
from gateway.services.ingest import Outcome, Target, read_target, record_dead_letter
from gateway.wire import ClipFormat, ClipHeader, WireError, decode
from storage import StoreRouter
from storage.errors import InvalidKey
from storage.keys import validate_id
from storage.tags import retention_tags

log = logging.getLogger(__name__)

_LOOKS = 3  # a part racing its clip's completion or clean-up looks again; once more is always enough


class ClipIngest:
    """Handles the messages of ``cam/<serial>/clip/<clip_id>``; raises only for transient failures."""

    def __init__(
        self,
        engine: AsyncEngine,
        stores: StoreRouter,
        video: VideoWorkers,
        settings: ClipSettings,
        catalogue: Catalogue,
        clock: Clock,
        max_skew: timedelta = DEFAULT_MAX_SKEW,
        letters: TokenBuckets | None = None,
    ) -> None:
        self._letters = letters  # the cameras' dead-letter allowance, shared with alert ingest
        self._db = engine
        self._stores = stores
        self._video = video
        self._settings = settings
        self._catalogue = catalogue
        self._clock = clock
        self._max_skew = max_skew  # ingest.max_clock_skew_s: the camera clock is trusted as for alerts
        # Each assembly holds a clip's parts and its encoding in memory (up to ~2x max_clip_bytes).
        self._assemblies = asyncio.Semaphore(settings.max_assemblies)

    async def handle(self, topic: str, serial: str, clip_id: str, payload: bytes) -> Outcome:
        """Processes one part. Idempotent: the same part twice has the effect of once."""
        outcome = await self._handle(topic, serial, clip_id, payload)
        metrics.CLIPS.labels(outcome.value).inc()
        return outcome

    async def _handle(self, topic: str, serial: str, clip_id: str, payload: bytes) -> Outcome:
        if len(payload) > self._settings.max_part_bytes:
            detail = f"{len(payload)} bytes > {self._settings.max_part_bytes}"
            return await self._dead_letter(topic, serial, "too_large", detail, payload)
        try:
            header, body = decode(payload)
            validate_id(clip_id, "clip id")  # the wire allows ids a storage key does not
        except WireError as exc:
            return await self._dead_letter(topic, serial, exc.reason, exc.detail, payload)
        except InvalidKey as exc:
            return await self._dead_letter(topic, serial, "bad_topic", str(exc), payload)
        if not isinstance(header, ClipHeader):
            detail = f"{header.type} on a clip topic"
            return await self._dead_letter(topic, serial, "unexpected_type", detail, payload)
        if header.clip_id != clip_id:
            detail = f"header clip id {header.clip_id!r}, topic {clip_id!r}"
            return await self._dead_letter(topic, serial, "clip_mismatch", detail, payload)
        for _ in range(_LOOKS):
            outcome = await self._part(topic, serial, header, bytes(body), payload)
            if outcome is not None:
                return outcome
        raise RuntimeError(f"clip {clip_id} of {serial} kept changing under this part")

    async def _part(
        self, topic: str, serial: str, header: ClipHeader, body: bytes, payload: bytes
    ) -> Outcome | None:
        """One look at the clip's state and what follows from it; None: the state moved, look again."""
        now = self._clock.now()
        async with self._db.connect() as conn:
            state = await staging.clip_state(conn, serial, header.clip_id)
        if state is None:
            return await self._dead_letter(topic, serial, "unknown_device", "no such serial", payload)
        if before_binding(header.captured_at, state.bound_at, now, self._max_skew):
            # The previous owner's clip (queued or re-sent): nothing staged, each part dropped unread.
            if header.part == 0:  # counted once per clip
                staging.count_drop(serial, header.clip_id, ClipDrop.BEFORE_BINDING)
            return Outcome.DROPPED
        if state.stored:
            return Outcome.DUPLICATE  # a redelivery, or a part re-sent after its clip was stored
        if (upload := state.upload) is None:
            return await self._first(topic, serial, header, payload, now)
        if state.status == DROPPED:
            return Outcome.DROPPED
        if (differs := mismatch(upload.header, header)) is not None:
            detail = f"part {header.part} differs from the clip's first part in {differs}"
            return await self._dead_letter(topic, serial, "clip_mismatch", detail, payload)
        return await self._stage(serial, upload, header, body, now)

    async def _first(
        self, topic: str, serial: str, header: ClipHeader, payload: bytes, now: datetime
    ) -> Outcome | None:
        """Decides for the whole clip and records the decision in a new upload row."""
        drop: ClipDrop | None = None
        async with self._db.connect() as conn:
            target = await self._target(conn, serial, header, now)
            if target is not None and target.account_id is not None and target.coverage is not None:
                drop = self._admission(target, await self._arrival(conn, target, header, now), header, now)
                # Refused early when even this part does not fit; the whole clip is checked once assembled.
                if drop is None and await self._over_quota(conn, target.account_id, header.body_size, now):
                    drop = ClipDrop.QUOTA_EXCEEDED
        if target is None:
            return await self._dead_letter(topic, serial, "unknown_device", "no such serial", payload)
        if target.account_id is None:
            detail = "the camera is bound to no account"
            return await self._dead_letter(topic, serial, "unbound_device", detail, payload)
        async with self._db.begin() as conn:
            if drop is None:
                busy = await staging.in_progress(conn, target.device_id, target.account_id)
                drop = self._bounds(serial, header, busy)
            created = await self._create(conn, target, header, drop, now)
        if created and drop is not None:
            staging.count_drop(serial, header.clip_id, drop)
            return Outcome.DROPPED
        return None  # the upload exists now (this part's or a concurrent one's): stage into it

    def _bounds(self, serial: str, header: ClipHeader, busy: staging.InProgress) -> ClipDrop | None:
        """Whether one more clip in progress fits the camera's and the account's limits."""
        limits = self._settings
        full = None
        if busy.device_uploads >= limits.max_uploads_per_device:
            full = f"{busy.device_uploads} clips of the camera"
        elif busy.account_uploads >= limits.max_uploads_per_account:
            full = f"{busy.account_uploads} clips of the account"
        if full is not None:
            log.info("clip %s of %s: %s in progress already", header.clip_id, serial, full)
            return ClipDrop.TOO_MANY_UPLOADS
        if busy.account_staged_bytes + header.body_size > limits.max_staged_bytes_per_account:
            return ClipDrop.STAGING_FULL
        return None

    async def _create(
        self, conn: AsyncConnection, target: Target, header: ClipHeader, drop: ClipDrop | None, now: datetime
    ) -> bool:
        """Inserts the clip's upload row with its decision; False when a concurrent first part did."""
        assert target.account_id is not None
        values = {
            "id": str(uuid.uuid4()),
            "device_id": target.device_id,
            "camera_clip_id": header.clip_id,
            "account_id": target.account_id,
            "binding_id": target.binding_id,
            "status": RECEIVING if drop is None else DROPPED,
            "reason": None if drop is None else drop.value,
            "header": header.model_dump(mode="json"),
            "created_at": now,
            "updated_at": now,
        }
        return await insert_ignore(conn, clip_uploads, values, ("device_id", "binding_id", "camera_clip_id"))

    async def _stage(
        self, serial: str, upload: Upload, header: ClipHeader, body: bytes, now: datetime
    ) -> Outcome | None:
        """Commits the part; assembles the clip when it completes the set."""
        drop: ClipDrop | None = None
        count = 0
        if header.format is ClipFormat.JPEG_FRAMES:
            try:
                frame_size(body, self._settings.max_frame_dimension)  # the header only: cheap
            except BadClip as exc:
                log.info("clip %s of %s: frame %d refused: %s", header.clip_id, serial, header.part, exc)
                drop = ClipDrop.BAD_FRAME
        async with self._db.begin() as conn:
            if not await staging.hold(conn, upload.id):
                return None  # dropped, stored or abandoned since the look
            if drop is None:
                staged = await staging.stage(conn, upload, header.part, body, now)
                count = staged.parts
                if staged.bytes > self._settings.max_clip_bytes:
                    drop = ClipDrop.CLIP_TOO_LARGE
                elif staged.account_bytes > self._settings.max_staged_bytes_per_account:
                    drop = ClipDrop.STAGING_FULL
            if drop is not None:
                await staging.drop(conn, upload.id, drop, now)
        if drop is not None:
            staging.count_drop(serial, header.clip_id, drop)
            return Outcome.DROPPED
        if count < upload.header.parts:
            return Outcome.STAGED
        async with self._assemblies:
            metrics.CLIP_ASSEMBLIES.inc()
            try:
                return await self._assemble(serial, upload, now)
            except Exception as exc:
                if classify(exc) is Failure.HOLD:
                    raise  # the last part stays unacknowledged: its redelivery assembles again
                log.exception("clip %s of %s: assembly failed", upload.header.clip_id, serial)
                return await self._drop(serial, upload, ClipDrop.ASSEMBLY_FAILED)
            finally:
                metrics.CLIP_ASSEMBLIES.dec()

    async def _assemble(self, serial: str, upload: Upload, now: datetime) -> Outcome | None:
        """Encodes or joins the parts, checks the quota, then stores the object and the row. Raises for
        any failure but a bad clip: the caller tells the transient ones from the rest."""
        header = upload.header
        async with self._db.connect() as conn:
            chunks = await staging.staged_parts(conn, upload.id)
            if len(chunks) < header.parts:
                return None  # another delivery assembled or dropped the clip meanwhile
            # Decided again with fresh data: the camera may have changed hands, the owner opted out, or
            # the plan ended (a refund) while the parts arrived.
            target = await self._target(conn, serial, header, now)
            arrival = None
            if target is not None and target.coverage is not None and target.account_id == upload.account_id:
                arrival = await self._arrival(conn, target, header, now)
        if (
            target is None
            or target.account_id != upload.account_id
            or target.coverage is None
            or target.before_binding(
                header.captured_at, now, self._max_skew
            )  # unbound and bound again meanwhile
        ):
            return await self._drop(serial, upload, ClipDrop.OWNER_CHANGED)
        if (drop := self._admission(target, arrival, header, now)) is not None:
            return await self._drop(serial, upload, drop)
        shape: tuple[int | None, int | None, int | None] = (None, None, None)
        if header.format is ClipFormat.JPEG_FRAMES:
            assert header.fps is not None  # the wire requires it for frames
            try:
                encoded = await self._video.encode(chunks, header.fps)
            except BadClip as exc:
                log.info("clip %s of %s cannot be encoded: %s", header.clip_id, serial, exc)
                return await self._drop(serial, upload, ClipDrop.BAD_FRAME)
            data, shape = encoded.data, (encoded.frames, encoded.width, encoded.height)
        else:
            data = b"".join(chunks)  # stored byte for byte
            if not looks_like(header.format, data):
                return await self._drop(serial, upload, ClipDrop.BAD_VIDEO)
        staged = sum(len(chunk) for chunk in chunks)
        del chunks
        async with self._db.connect() as conn:
            # The usage counts this clip's staged parts: the clip replaces them.
            if await self._over_quota(conn, upload.account_id, len(data) - staged, now):
                return await self._drop(serial, upload, ClipDrop.QUOTA_EXCEEDED)
        return await self._store(serial, upload, target, data, shape, now)

    async def _store(
        self,
        serial: str,
        upload: Upload,
        target: Target,
        data: bytes,
        shape: tuple[int | None, int | None, int | None],
        now: datetime,
    ) -> Outcome:
        header = upload.header
        assert target.account_id is not None and target.region is not None and target.coverage is not None
        retention = target.coverage.retention
        until = retain_until(header.captured_at, now, retention, self._max_skew)
        kind = STORED_AS[header.format]
        key = object_key(target.account_id, target.device_id, header)
        store = self._stores.for_region(target.region)
        put = await store.put(
            key,
            data,
            content_type=kind.content_type,
            tags={"kind": "clip", **retention_tags(retention.video_days)},
            metadata={
                "clip-id": header.clip_id,
                "plan": target.coverage.plan.id,
                "retain-until": until.isoformat(),
            },
        )
        size = len(data)
        if not put.created:
            # An earlier assembly stored it and crashed before its commit, or one is committing now:
            # the row must describe the object that is there.
            info = await store.head(key)
            size = info.size if info is not None else size
        frames, width, height = shape
        row = {
            "id": str(uuid.uuid4()),
            "account_id": target.account_id,
            "device_id": target.device_id,
            "binding_id": target.binding_id,
            "camera_clip_id": header.clip_id,
            "event_id": header.event_id,
            "region": target.region,
            "key": key,
            "content_type": kind.content_type,
            "bytes": size,
            "frames": frames,
            "width": width,
            "height": height,
            "plan_id": target.coverage.plan.id,
            "captured_at": header.captured_at,
            "received_at": upload.created_at,
            "stored_at": self._clock.now(),
            "retain_until": until,
        }
        async with self._db.begin() as conn:
            inserted = await insert_ignore(conn, clips, row, ("device_id", "binding_id", "camera_clip_id"))
            await staging.finish(conn, upload.id)
        if inserted:
            metrics.STORED_BYTES.inc(size)
            log.info("clip %s of %s stored: %d bytes, kept until %s", header.clip_id, serial, size, until)
        return Outcome.STORED if inserted else Outcome.DUPLICATE

    async def abandon_stale(self) -> int:
        """Removes uploads idle for ``clips.upload_timeout_s``: incomplete ones are dead-lettered and
        counted (``incomplete``), dropped ones forgotten; complete ones wait for their last part's
        redelivery. Returns how many were removed."""
        now = self._clock.now()
        timeout_s = self._settings.upload_timeout_s
        return await staging.abandon_stale(self._db, now, now - timedelta(seconds=timeout_s), timeout_s)

    # --- helpers -----------------------------------------------------------------------------

    async def _target(
        self, conn: AsyncConnection, serial: str, header: ClipHeader, now: datetime
    ) -> Target | None:
        # The alert's event id finds its kind (for the owner's kind filter) when it is stored already.
        at = retain_from(header.captured_at, now, self._max_skew)
        return await read_target(conn, self._catalogue, serial, header.event_id or "", at)

    async def _arrival(
        self, conn: AsyncConnection, target: Target, header: ClipHeader, now: datetime
    ) -> Retention:
        """The retention of the plan in force now, which must include video for the clip to be written
        (the plan at capture only fixes how long it lives)."""
        assert target.account_id is not None and target.coverage is not None
        if (
            retain_from(header.captured_at, now, self._max_skew) == now
        ):  # capture counts as now: the plan read already
            return target.coverage.retention
        cover = await coverage_at(conn, self._catalogue, target.device_id, target.account_id, now)
        return cover.retention

    def _admission(
        self, target: Target, arrival: Retention | None, header: ClipHeader, now: datetime
    ) -> ClipDrop | None:
        assert target.coverage is not None and arrival is not None
        opt_out = opted_out(target.prefs, target.event_kind, now)
        retention = target.coverage.retention
        return admission(header, retention, opt_out, now, self._settings.max_parts, arrival, self._max_skew)

    async def _over_quota(self, conn: AsyncConnection, account_id: str, size: int, now: datetime) -> bool:
        quota = await quota_bytes(conn, self._catalogue, account_id, now)
        return (await usage(conn, account_id)).total_bytes + size > quota

    async def _drop(self, serial: str, upload: Upload, reason: ClipDrop) -> Outcome | None:
        async with self._db.begin() as conn:
            dropped = await staging.drop(conn, upload.id, reason, self._clock.now())
        if not dropped:
            return None  # stored or dropped by a concurrent delivery: look again
        staging.count_drop(serial, upload.header.clip_id, reason)
        return Outcome.DROPPED

    async def _dead_letter(
        self, topic: str, serial: str, reason: str, detail: str, payload: bytes
    ) -> Outcome:
        async with self._db.begin() as conn:
            await record_dead_letter(
                conn, self._clock.now(), topic, serial, reason, detail, payload, budget=self._letters
            )
        return Outcome.DEAD_LETTER

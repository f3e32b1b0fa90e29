"""The composition root: builds every service from the settings, once."""

import logging
import os
import secrets
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.adapters.clock import SystemClock
from gateway.adapters.db.engine import create_engine, migrate
from gateway.adapters.imaging import ImageWorkers
from gateway.adapters.mqtt import MqttClient
from gateway.adapters.passwords import Argon2Hasher
from gateway.adapters.payments import LedgerProvider
from gateway.adapters.push import push_providers
from gateway.adapters.senders import MailboxSender, SmsWebhookSender, SmtpSender
from gateway.adapters.video import VideoWorkers
from gateway.config import Settings
from gateway.domain.accounts import Channel
from gateway.errors import ConfigError
from gateway.ports import Clock, MessageSender, Publisher
from gateway.services.accounts import AccountService
from gateway.services.alert_settings import AlertSettingsService
from gateway.services.clip_library import ClipLibrary
from gateway.services.clips import ClipIngest
from gateway.services.devices import DeviceService
from gateway.services.events import EventService
from gateway.services.ingest import IngestService, letter_budget
from gateway.services.plans import PlanService
from gateway.services.push import PushService
from gateway.services.sweep import Sweeper
from storage import StoreRouter

log = logging.getLogger(__name__)
INGEST_TOPICS = ["cam/+/alert", "cam/+/status", "cam/+/clip/+"]


@dataclass
class Services:
    """Everything the API and the CLI call into."""

    settings: Settings
    engine: AsyncEngine
    clock: Clock
    pepper: bytes
    http: aiohttp.ClientSession
    stores: StoreRouter
    accounts: AccountService
    devices: DeviceService
    alert_settings: AlertSettingsService
    events: EventService
    clips: ClipLibrary
    plans: PlanService
    ingest: IngestService
    clip_ingest: ClipIngest
    mqtt: MqttClient | None
    push: PushService
    sweeper: Sweeper


def load_pepper(settings: Settings) -> bytes:
    """The secret key: from settings, else from (or newly into) the key file, readable by the owner only."""
    if settings.security.secret_key is not None:
        return settings.security.secret_key.get_secret_value().encode()
    path: Path = settings.security.secret_key_file
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    log.warning("created a new secret key in %s; keep it: code hashes depend on it", path)
    return key


async def build(settings: Settings, stack: AsyncExitStack, *, clock: Clock | None = None) -> Services:
    """Creates the engine (migrating the schema), the senders and the services; ``stack`` closes them."""
    clock = clock or SystemClock()
    pepper = load_pepper(settings)
    engine = create_engine(settings.database.url, pool_size=settings.database.pool_size)
    stack.push_async_callback(engine.dispose)
    await migrate(engine)
    http = aiohttp.ClientSession()
    stack.push_async_callback(http.close)
    sec = settings.security
    hasher = Argon2Hasher(
        time_cost=sec.argon2_time_cost,
        memory_kib=sec.argon2_memory_kib,
        parallelism=sec.argon2_parallelism,
        workers=sec.hash_workers,
        queue=sec.hash_queue,
    )
    stack.callback(hasher.close)
    senders = _senders(settings, http)
    stores = await StoreRouter.open(settings.storage())
    stack.push_async_callback(stores.aclose)
    ing = settings.ingest
    images = ImageWorkers(
        ing.image_workers,
        min_dim=ing.min_dimension,
        max_dim=ing.max_dimension,
        thumb_width=ing.thumbnail_width,
    )
    stack.callback(images.close)
    video = VideoWorkers(settings.clips.video_workers, max_dim=settings.clips.max_frame_dimension)
    stack.callback(video.close)
    letters = letter_budget(settings.ingest)  # one dead-letter allowance per camera, alerts and clips
    clip_ingest = ClipIngest(
        engine,
        stores,
        video,
        settings.clips,
        settings.catalogue(),
        clock,
        max_skew=timedelta(seconds=settings.ingest.max_clock_skew_s),
        letters=letters,
    )
    mqtt = MqttClient(settings.mqtt, INGEST_TOPICS) if settings.mqtt.enabled else None
    publisher: Publisher = mqtt if mqtt is not None else DiscardingPublisher()
    alert_settings = AlertSettingsService(engine, publisher, clock)
    push = PushService(engine, settings, clock, push_providers(settings, pepper, clock), stores)
    stack.push_async_callback(push.aclose)  # before the engine and the HTTP session close
    return Services(
        settings=settings,
        engine=engine,
        clock=clock,
        pepper=pepper,
        http=http,
        stores=stores,
        accounts=AccountService(engine, settings, pepper, hasher, senders, clock),
        devices=DeviceService(engine, settings, pepper, clock, on_owner_change=alert_settings.publish_for),
        alert_settings=alert_settings,
        events=EventService(engine, stores, clock),
        clips=ClipLibrary(engine, stores, settings.catalogue(), clock),
        plans=PlanService(engine, settings.catalogue(), LedgerProvider(), clock),
        ingest=IngestService(
            engine,
            stores,
            images,
            ing,
            settings.catalogue(),
            clock,
            clips=clip_ingest,
            publisher=publisher,
            letters=letters,
        ),
        clip_ingest=clip_ingest,
        mqtt=mqtt,
        push=push,
        sweeper=Sweeper(engine, stores, settings.sweep, clock),
    )


class DiscardingPublisher:
    """Stands in for the broker when MQTT is disabled (an HTTP-only instance): cameras are told nothing."""

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Drops the message."""
        log.debug("MQTT disabled: not publishing to %s", topic)


def _senders(settings: Settings, http: aiohttp.ClientSession) -> dict[Channel, MessageSender]:
    notify = settings.notify
    mailbox = MailboxSender(notify.mailbox_dir)
    if settings.environment == "production" and (notify.smtp is None or notify.sms_webhook is None):
        raise ConfigError(
            "production needs notify.smtp and notify.sms_webhook: the mailbox folder is for development"
        )
    email: MessageSender = SmtpSender(notify.smtp) if notify.smtp else mailbox
    sms: MessageSender = SmsWebhookSender(notify.sms_webhook, http) if notify.sms_webhook else mailbox
    return {Channel.EMAIL: email, Channel.SMS: sms}

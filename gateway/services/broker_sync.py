"""Broker accounts follow the registry: every registered camera gets a login, rendered into Mosquitto's
password file (hashes only; the broker verifies them), then the broker is told to reload."""

import asyncio
import logging

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.adapters.broker_auth import BrokerAccount, BrokerFiles, reload_broker, write_broker_files
from gateway.adapters.db.tables import devices
from gateway.config import BrokerSettings

log = logging.getLogger(__name__)


async def sync_broker(engine: AsyncEngine, settings: BrokerSettings) -> int | None:
    """Rewrites the broker's files from the registry and reloads it; None when not configured."""
    if settings.password_file is None or settings.acl_file is None:
        return None
    async with engine.connect() as conn:
        accounts = [
            (r.serial, r.broker_secret_hash)
            for r in await conn.execute(
                select(devices.c.serial, devices.c.broker_secret_hash).order_by(devices.c.serial)
            )
        ]
    files = BrokerFiles(settings.password_file, settings.acl_file, settings.group)
    gateways = [BrokerAccount(g.username, g.password_hash) for g in settings.gateways]
    written = await asyncio.to_thread(write_broker_files, files, accounts, gateways)
    if settings.pid_file is not None and settings.pid_file.exists():
        await asyncio.to_thread(reload_broker, pid_file=settings.pid_file)
        log.info("broker files rewritten with %d cameras; broker reloaded", written)
    else:
        log.info("broker files rewritten with %d cameras (no pid file: reload the broker yourself)", written)
    return written

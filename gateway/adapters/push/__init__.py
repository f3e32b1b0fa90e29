"""Push providers, one module per protocol: the signed webhook now; FCM, APNs and Web Push later."""

import aiohttp

from gateway.adapters.push.webhook import WebhookProvider
from gateway.config import PushSettings
from gateway.ports import Clock, PushProvider


def push_providers(
    settings: PushSettings, http: aiohttp.ClientSession, pepper: bytes, clock: Clock
) -> dict[str, PushProvider]:
    """Every provider by the target kind it serves."""
    return {"webhook": WebhookProvider(http, pepper, clock, settings)}

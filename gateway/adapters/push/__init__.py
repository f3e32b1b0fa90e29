"""Push providers, one module per protocol: the signed webhook now; FCM, APNs and Web Push later."""

from gateway.adapters.push.webhook import WebhookProvider
from gateway.config import Settings
from gateway.ports import Clock, PushProvider


def push_providers(settings: Settings, pepper: bytes, clock: Clock) -> dict[str, PushProvider]:
    """Every provider by the target kind it serves; each owns its HTTP session, closed by the push
    service's ``aclose``."""
    https_only = settings.environment == "production"
    return {"webhook": WebhookProvider(pepper, clock, settings.push, https_only=https_only)}

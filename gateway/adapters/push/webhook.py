"""The signed webhook provider: an HTTPS POST of a JSON alert, signed Stripe-style (see docs/push.md).

The signing secret of a target is never stored: it is ``keyed_digest(pepper, "webhook", target_id)``,
recomputed when signing and shown to the owner once, when the target is registered.

Webhook URLs are user input that makes the gateway send requests, so they are checked against SSRF: only
http(s), and unless ``push.allow_private_addresses`` is set, no loopback, private, link-local, multicast
or otherwise non-global address, whether written as a literal or reached through DNS. The check runs at
registration and again before every delivery (a name may be re-pointed after registration).
"""

import asyncio
import hashlib
import hmac
import ipaddress
import json
import socket
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from yarl import URL

from gateway.config import PushSettings
from gateway.domain.credentials import keyed_digest
from gateway.errors import InvalidRequest
from gateway.ports import Clock, DeliveryOutcome, DeliveryResult, Notification, PushTarget

KIND = "webhook"
MAX_URL_LENGTH = 2000  # the push_targets.address column
SIGNATURE_HEADER = "X-Camgate-Signature"
DELIVERY_HEADER = "X-Camgate-Delivery"
SIGNATURE_TOLERANCE_S = 300
_GONE = frozenset({404, 410})
_RETRY_AFTER_STATUSES = frozenset({429, 503})

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def webhook_secret(pepper: bytes, target_id: str) -> str:
    """The signing secret of a webhook target, derived so it never has to be stored."""
    return keyed_digest(pepper, KIND, target_id)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Camgate-Signature`` value: ``t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "t." + body)>``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(
    secret: str, header: str, body: bytes, *, now: float, tolerance_s: float = SIGNATURE_TOLERANCE_S
) -> bool:
    """What a receiver does: recompute the MAC, compare in constant time, refuse stale timestamps."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = signature(secret, timestamp, body).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, given) for given in fields.get("v1", []))


def render_body(notification: Notification) -> bytes:
    """The JSON body of an alert webhook, compact, exactly as signed."""
    n = notification
    payload: dict[str, Any] = {
        "type": "alert",
        "event": {
            "id": n.event_id,
            "device_id": n.device_id,
            "device_name": n.device_name,
            "kind": n.kind,
            "captured_at": n.captured_at.isoformat().replace("+00:00", "Z"),
        },
        "thumbnail_url": n.thumbnail_url,
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP-date); None when absent or bad."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive parse result means no zone was given
        return None
    return max(0.0, (when - now).total_seconds())


def classify(status: int, retry_after: str | None, now: datetime) -> DeliveryResult:
    """What an HTTP status means: 2xx delivered, 404/410 gone, anything else retried later."""
    if 200 <= status < 300:
        return DeliveryResult(DeliveryOutcome.DELIVERED, status, f"HTTP {status}")
    if status in _GONE:
        return DeliveryResult(DeliveryOutcome.GONE, status, f"HTTP {status}")
    wait = parse_retry_after(retry_after, now) if status in _RETRY_AFTER_STATUSES else None
    return DeliveryResult(DeliveryOutcome.RETRY, status, f"HTTP {status}", wait)


def is_forbidden_ip(ip: IpAddress) -> bool:
    """True for anything but a global unicast address (loopback, private, link-local, multicast …)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback in disguise (Python 3.11 does not see it)
    return not ip.is_global or ip.is_multicast


def parse_url(raw: str) -> URL:
    """The URL if it is an absolute http(s) URL with a host and no credentials; else InvalidRequest."""
    if len(raw) > MAX_URL_LENGTH:
        raise InvalidRequest("webhook_url_invalid", f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        url = URL(raw)
    except (ValueError, TypeError):
        raise InvalidRequest("webhook_url_invalid", "the URL cannot be parsed") from None
    if url.scheme not in {"http", "https"}:
        raise InvalidRequest("webhook_url_invalid", "the URL must start with https:// or http://")
    if not url.host:
        raise InvalidRequest("webhook_url_invalid", "the URL has no host")
    if url.user is not None or url.password is not None:
        # Credentials in the URL would sit in the database in clear; the signature authenticates us.
        raise InvalidRequest("webhook_url_invalid", "the URL must not contain a user name or password")
    return url


class WebhookProvider:
    """Delivers alerts as signed JSON POSTs over the shared aiohttp session."""

    def __init__(
        self, http: aiohttp.ClientSession, pepper: bytes, clock: Clock, settings: PushSettings
    ) -> None:
        self._http = http
        self._pepper = pepper
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        self._resolve_timeout_s = settings.timeout_s
        self._allow_private = settings.allow_private_addresses

    async def check_address(self, address: str) -> str:
        """The normalised URL, or InvalidRequest (``webhook_url_invalid``, ``webhook_address_forbidden``,
        ``webhook_host_unresolvable``)."""
        url = parse_url(address.strip())
        await self._check_host(url)
        return str(url)

    def secret_for(self, target_id: str) -> str:
        """The signing secret, recomputed from the pepper."""
        return webhook_secret(self._pepper, target_id)

    async def send(self, target: PushTarget, notification: Notification) -> DeliveryResult:
        """One signed POST; redirects are not followed (they could lead past the address check)."""
        try:
            await self._check_host(parse_url(target.address))
        except InvalidRequest as exc:
            return DeliveryResult(DeliveryOutcome.RETRY, None, exc.code)
        body = render_body(notification)
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": notification.event_id,
            DELIVERY_HEADER: notification.delivery_id,
            SIGNATURE_HEADER: signature(self.secret_for(target.id), int(self._clock.now().timestamp()), body),
        }
        try:
            async with self._http.post(
                target.address, data=body, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as resp:
                status, retry_after = resp.status, resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return DeliveryResult(DeliveryOutcome.RETRY, None, _describe(exc))
        return classify(status, retry_after, self._clock.now())

    async def _check_host(self, url: URL) -> None:
        if self._allow_private:
            return
        host = url.host or ""
        try:
            literal: IpAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        addresses = [literal] if literal is not None else await self._resolve(host, url.port)
        if any(is_forbidden_ip(ip) for ip in addresses):
            raise InvalidRequest(
                "webhook_address_forbidden",
                "the URL points to a loopback, private, link-local or multicast address",
            )

    async def _resolve(self, host: str, port: int | None) -> list[IpAddress]:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._resolve_timeout_s):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError):
            raise InvalidRequest(
                "webhook_host_unresolvable", f"the host name {host!r} does not resolve"
            ) from None
        # A scoped IPv6 address comes back as "fe80::1%eth0"; the scope does not change its class.
        return [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    return f"{type(exc).__name__}: {exc}"[:200]

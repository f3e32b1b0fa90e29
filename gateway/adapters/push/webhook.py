"""The signed webhook provider: an HTTPS POST of a JSON alert, signed Stripe-style (see docs/push.md).

The signing secret of a target is never stored: it is ``keyed_digest(pepper, "webhook", target_id)``,
recomputed when signing and shown to the owner once, when the target is registered.

Webhook URLs are user input that makes the gateway send requests, so they are checked against SSRF: only
https (http too outside production), and unless ``push.allow_private_addresses`` is set, only global
unicast addresses (``addresses.py``), whether written as a literal or reached through DNS. The check runs
at registration and at every connection: the provider's session resolves through ``VettedResolver`` only,
so the address checked is the address connected to (``resolver.py``).
"""

import asyncio
import hashlib
import hmac
import json
import socket
from datetime import datetime
from email.utils import parsedate_to_datetime
from ipaddress import IPv4Address
from typing import Any

import aiohttp
from yarl import URL

from gateway.adapters.push.addresses import is_forbidden_ip, literal_address
from gateway.adapters.push.resolver import AddressForbidden, VettedResolver, vetted_resolver
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


def parse_url(raw: str, *, https_only: bool = False) -> URL:
    """The URL if it is an absolute https (or, unless ``https_only``, http) URL with a host and no
    credentials; else InvalidRequest."""
    if len(raw) > MAX_URL_LENGTH:
        raise InvalidRequest("webhook_url_invalid", f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        url = URL(raw)
        host = url.host  # decodes IDNA, which can fail too ("xn--")
    except (ValueError, TypeError):
        raise InvalidRequest("webhook_url_invalid", "the URL cannot be parsed") from None
    if url.scheme not in {"http", "https"}:
        raise InvalidRequest("webhook_url_invalid", "the URL must start with https:// or http://")
    if not host:
        raise InvalidRequest("webhook_url_invalid", "the URL has no host")
    if url.user is not None or url.password is not None:
        # Credentials in the URL would sit in the database in clear; the signature authenticates us.
        raise InvalidRequest("webhook_url_invalid", "the URL must not contain a user name or password")
    if https_only and url.scheme != "https":
        # Alerts carry device names and thumbnail links: in production they never travel in clear.
        raise InvalidRequest("webhook_https_required", "webhook URLs must start with https://")
    return url


def check_literal(host: str) -> bool:
    """Whether ``host`` is an IP address (vetted here, raising InvalidRequest) rather than a name."""
    ip = literal_address(host)
    if ip is None:
        return False
    if is_forbidden_ip(ip):
        raise InvalidRequest(
            "webhook_address_forbidden",
            "the URL points to a loopback, private, link-local, multicast or otherwise non-global address",
        )
    if isinstance(ip, IPv4Address) and str(ip) != host:  # 16843009 for 1.1.1.1: aiohttp refuses it too
        raise InvalidRequest("webhook_url_invalid", f"write the address as {ip}")
    return True


class WebhookProvider:
    """Delivers alerts as signed JSON POSTs over a session of its own, whose connector resolves through
    the address policy (``VettedResolver``) and nothing else."""

    def __init__(self, pepper: bytes, clock: Clock, settings: PushSettings, *, https_only: bool) -> None:
        self._pepper = pepper
        self._clock = clock
        self._settings = settings
        self._https_only = https_only
        self._allow_private = settings.allow_private_addresses
        # One deadline for connect (the look-up included), sending and the answer's headers; the body
        # is never read.
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        self._resolver: VettedResolver | None = None
        self._session: aiohttp.ClientSession | None = None

    async def check_address(self, address: str) -> str:
        """The normalised URL, or InvalidRequest (``webhook_url_invalid``, ``webhook_https_required``,
        ``webhook_address_forbidden``, ``webhook_host_unresolvable``)."""
        url = parse_url(address.strip(), https_only=self._https_only)
        host = url.host or ""
        if self._allow_private or check_literal(host):
            return str(url)
        try:
            async with asyncio.timeout(self._settings.timeout_s):
                await self._vetted().resolve(host, url.port or 0, socket.AF_UNSPEC)
        except AddressForbidden:
            raise InvalidRequest(
                "webhook_address_forbidden",
                f"the host name {host!r} resolves to a loopback, private, link-local, multicast or "
                "otherwise non-global address",
            ) from None
        except (OSError, TimeoutError):
            raise InvalidRequest(
                "webhook_host_unresolvable", f"the host name {host!r} does not resolve"
            ) from None
        return str(url)

    def secret_for(self, target_id: str) -> str:
        """The signing secret, recomputed from the pepper."""
        return webhook_secret(self._pepper, target_id)

    async def send(self, target: PushTarget, notification: Notification) -> DeliveryResult:
        """One signed POST to an address that passed the policy; redirects are not followed (they could
        lead anywhere)."""
        try:
            url = parse_url(target.address, https_only=self._https_only)
            if not self._allow_private:
                check_literal(url.host or "")  # a name is vetted by the resolver, at connection time
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
            async with self._http().post(
                target.address, data=body, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as resp:
                status, retry_after = resp.status, resp.headers.get("Retry-After")
        except aiohttp.ClientConnectorDNSError as exc:
            code = (
                "webhook_address_forbidden"
                if isinstance(exc.os_error, AddressForbidden)
                else ("webhook_host_unresolvable")
            )
            return DeliveryResult(DeliveryOutcome.RETRY, None, f"{code}: {exc.os_error}"[:200])
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return DeliveryResult(DeliveryOutcome.RETRY, None, _describe(exc))
        return classify(status, retry_after, self._clock.now())

    async def aclose(self) -> None:
        """Closes the session and its resolver (idempotent)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        resolver, self._resolver = self._resolver, None
        if resolver is not None:
            await resolver.close()

    def _vetted(self) -> VettedResolver:
        # Made on first use: the system resolver needs the running loop.
        if self._resolver is None:
            self._resolver = vetted_resolver(
                self._settings.nameserver_addresses(),
                timeout_s=self._settings.timeout_s,
                allow_private=self._allow_private,
            )
        return self._resolver

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=self._vetted(),
                use_dns_cache=False,  # every connection asks (and vets) afresh
                limit=0,  # the dispatcher bounds deliveries in flight
            )
            # trust_env=False: an HTTP(S)_PROXY from the environment would resolve the name itself.
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    return f"{type(exc).__name__}: {exc}"[:200]

"""The app factory."""

import contextlib
import ipaddress

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.api import routes  # noqa: F401 - registers the operations
from gateway.api.problems import problems
from gateway.api.routing import CLIENT_ADDRESS, MAX_BODY_BYTES
from gateway.api.state import SERVICES, api
from gateway.api.store_readiness import STORE_READINESS, StoreReadiness
from gateway.bootstrap import Services
from gateway.jobs import clip_cleanup, housekeeping, ingest, push_dispatcher, renewals, sweeper
from gateway.services.accounts import Principal


def create_app(services: Services) -> web.Application:
    """The aiohttp application serving the API over the given services."""
    settings = services.settings.http
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[_client_address(settings.trusted_proxies), problems],
    )
    app[SERVICES] = services
    app[MAX_BODY_BYTES] = settings.max_body_bytes
    readiness = StoreReadiness(services.stores)
    app[STORE_READINESS] = readiness

    async def stop_readiness(_app: web.Application) -> None:
        await readiness.aclose()

    app.on_cleanup.append(stop_readiness)

    async def authenticate(_request: web.Request, token: str) -> Principal:
        return await services.accounts.authenticate(token)

    api.install(app, authenticate)
    app.cleanup_ctx.append(housekeeping(services))
    app.cleanup_ctx.append(ingest(services))
    app.cleanup_ctx.append(push_dispatcher(services))
    app.cleanup_ctx.append(renewals(services))
    app.cleanup_ctx.append(clip_cleanup(services))
    app.cleanup_ctx.append(sweeper(services))
    return app


def _client_address(trusted: list[str]):  # type: ignore[no-untyped-def]
    networks = [ipaddress.ip_network(n, strict=False) for n in trusted]

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        # X-Forwarded-For is believed only from a configured proxy, else anyone could dodge throttles.
        address = request.remote or ""
        forwarded = request.headers.get("X-Forwarded-For")
        if forwarded and networks and _within(address, networks):
            claimed = forwarded.split(",")[-1].strip()
            # Only an address: the value keys throttles and the audit log, and a proxy may pass anything.
            with contextlib.suppress(ValueError):
                address = str(ipaddress.ip_address(claimed))
        request[CLIENT_ADDRESS] = address
        return await handler(request)

    return middleware


def _within(address: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in n for n in networks)

"""Liveness, readiness, metrics and the OpenAPI document."""

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from gateway.api import schemas as s
from gateway.api.routing import Call, Reply
from gateway.api.state import api, services
from gateway.api.store_readiness import STORE_READINESS


@api.route(
    "GET", "/healthz", summary="Liveness: the process answers", tag="ops", response=s.Health, auth=False
)
async def liveness(call: Call) -> s.Health:
    return s.Health(status="ok")


@api.route(
    "GET",
    "/readyz",
    summary="Readiness: the database, the broker and every region's object store answer",
    tag="ops",
    response=s.Health,
    auth=False,
    other_statuses=(503,),
)
async def readiness(call: Call) -> s.Health | Reply:
    checks = {"database": "ok"}
    try:
        async with services(call).engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", reported by name
        checks["database"] = type(exc).__name__
    mqtt = services(call).mqtt
    if mqtt is not None:
        checks["broker"] = "ok" if mqtt.connected.is_set() else "disconnected"
        # Acks leave in arrival order: a head that does not settle holds back every message behind it.
        stuck_after = services(call).settings.ingest.stuck_after_s
        checks["ingest"] = "stuck" if mqtt.oldest_unacknowledged_s > stuck_after else "ok"
    # Each region's object store: remembered a few seconds, one check in flight (store_readiness).
    checks.update(await call.request.app[STORE_READINESS].check())
    if any(v != "ok" for v in checks.values()):
        return Reply(s.Health(status="unavailable", checks=checks), 503)
    return s.Health(status="ok", checks=checks)


@api.route("GET", "/metrics", summary="Prometheus metrics", tag="ops", auth=False)
async def metrics(call: Call) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


@api.route("GET", "/v1/openapi.json", summary="This API's OpenAPI 3.1 document", tag="ops", auth=False)
async def openapi(call: Call) -> web.Response:
    return web.json_response(api.openapi())

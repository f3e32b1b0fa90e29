"""Alert events and their media."""

from aiohttp import web

from gateway.api import schemas as s
from gateway.api.routing import Call
from gateway.api.state import api, services
from gateway.services.events import Event, EventFilter

MEDIA_LINK_TTL_S = 300


def event_out(event: Event) -> s.EventOut:
    """The API view of an event; media URLs point at this API, which redirects or streams."""
    return s.EventOut(
        id=event.id,
        device_id=event.device_id,
        kind=event.kind,
        captured_at=event.captured_at,
        received_at=event.received_at,
        width=event.width,
        height=event.height,
        snapshot_bytes=event.snapshot_bytes,
        snapshot_url=f"/v1/events/{event.id}/snapshot" if event.snapshot_key else None,
        thumbnail_url=f"/v1/events/{event.id}/thumbnail" if event.thumbnail_key else None,
        snapshot_dropped=event.snapshot_dropped,
    )


@api.route(
    "GET",
    "/v1/events",
    summary="List alert events (filters, newest first, cursor pages)",
    tag="events",
    query=s.EventQuery,
    response=s.EventPage,
)
async def list_events(call: Call) -> s.EventPage:
    q = call.query(s.EventQuery)
    flt = EventFilter(device_id=q.device_id, kind=q.kind, since=q.since, until=q.until)
    items, cursor = await services(call).events.page(call.account_id, flt, limit=q.limit, cursor=q.cursor)
    return s.EventPage(items=[event_out(e) for e in items], next_cursor=cursor)


@api.route("GET", "/v1/events/{event_id}", summary="Read one event", tag="events", response=s.EventOut)
async def read_event(call: Call) -> s.EventOut:
    return event_out(await services(call).events.get(call.account_id, call.path("event_id")))


async def _media(call: Call, which: str) -> web.StreamResponse:
    event_id = call.path("event_id")
    url, data = await services(call).events.media(call.account_id, event_id, which, MEDIA_LINK_TTL_S)
    if url is not None:
        raise web.HTTPTemporaryRedirect(url, headers={"Cache-Control": "private, no-store"})
    return web.Response(
        body=data, content_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"}
    )


@api.route(
    "GET",
    "/v1/events/{event_id}/snapshot",
    summary="The snapshot (redirect to a short-lived link, or the JPEG)",
    tag="events",
    other_statuses=(307,),
)
async def event_snapshot(call: Call) -> web.StreamResponse:
    return await _media(call, "snapshot")


@api.route(
    "GET",
    "/v1/events/{event_id}/thumbnail",
    summary="The thumbnail (redirect to a short-lived link, or the JPEG)",
    tag="events",
    other_statuses=(307,),
)
async def event_thumbnail(call: Call) -> web.StreamResponse:
    return await _media(call, "thumbnail")


@api.route(
    "DELETE", "/v1/events/{event_id}", summary="Delete an event and its media", tag="events", status=204
)
async def delete_event(call: Call) -> None:
    await services(call).events.delete(call.account_id, call.path("event_id"), address=call.address)

"""Event clips: listed and played only while the device's cloud plan is in force."""

import re

from aiohttp import web

from gateway.api import schemas as s
from gateway.api.routing import Call
from gateway.api.state import api, services
from gateway.errors import ClientError
from gateway.services.clip_library import Clip

VIDEO_LINK_TTL_S = 300
_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")  # ASCII digits only: \d matches any script's digits
_BEYOND_ANY_CLIP = 10**18


class RangeNotSatisfiable(ClientError):
    status = 416
    title = "Range not satisfiable"


def clip_out(clip: Clip) -> s.ClipOut:
    """The API view of a clip; the video URL points at this API, which redirects or streams."""
    return s.ClipOut(
        id=clip.id,
        device_id=clip.device_id,
        event_id=clip.event_id,
        content_type=clip.content_type,
        bytes=clip.bytes,
        frames=clip.frames,
        width=clip.width,
        height=clip.height,
        plan_id=clip.plan_id,
        captured_at=clip.captured_at,
        received_at=clip.received_at,
        retain_until=clip.retain_until,
        video_url=f"/v1/clips/{clip.id}/video",
    )


@api.route(
    "GET",
    "/v1/clips",
    summary="List event clips of devices with a cloud plan in force (newest first, cursor pages)",
    tag="clips",
    query=s.ClipQuery,
    response=s.ClipPage,
    other_statuses=(402,),
)
async def list_clips(call: Call) -> s.ClipPage:
    q = call.query(s.ClipQuery)
    items, cursor = await services(call).clips.page(
        call.account_id, device_id=q.device_id, since=q.since, until=q.until, limit=q.limit, cursor=q.cursor
    )
    return s.ClipPage(items=[clip_out(c) for c in items], next_cursor=cursor)


@api.route(
    "GET",
    "/v1/clips/{clip_id}",
    summary="Read one clip",
    tag="clips",
    response=s.ClipOut,
    other_statuses=(402,),
)
async def read_clip(call: Call) -> s.ClipOut:
    return clip_out(await services(call).clips.get(call.account_id, call.path("clip_id")))


@api.route(
    "GET",
    "/v1/clips/{clip_id}/video",
    summary="The clip's video (redirect to a short-lived link, or the bytes with Range support)",
    tag="clips",
    other_statuses=(206, 307, 402, 416),
)
async def clip_video(call: Call) -> web.StreamResponse:
    play = await services(call).clips.playback(call.account_id, call.path("clip_id"), VIDEO_LINK_TTL_S)
    if play.url is not None:
        raise web.HTTPTemporaryRedirect(play.url, headers={"Cache-Control": "private, no-store"})
    assert play.data is not None
    return _ranged(call.request, play.data, play.content_type)


@api.route("DELETE", "/v1/clips/{clip_id}", summary="Delete a clip and its video", tag="clips", status=204)
async def delete_clip(call: Call) -> None:
    await services(call).clips.delete(call.account_id, call.path("clip_id"), address=call.address)


def _ranged(request: web.Request, data: bytes, content_type: str) -> web.Response:
    # Browsers seek in <video> with Range requests; one range is all they send.
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, max-age=300"}
    match = _RANGE.fullmatch(request.headers.get("Range", "").strip())
    if match is None or match.groups() == ("", ""):
        return web.Response(body=data, content_type=content_type, headers=headers)
    first, last = match.groups()
    size = len(data)
    if first:
        start, end = _position(first), min(_position(last) if last else size - 1, size - 1)
    else:  # a suffix range: the last N bytes
        start, end = max(0, size - _position(last)), size - 1
    if start >= size or start > end:
        raise RangeNotSatisfiable(
            "range_not_satisfiable",
            f"the clip has {size} bytes",
            headers={"Content-Range": f"bytes */{size}"},
        )
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return web.Response(status=206, body=data[start : end + 1], content_type=content_type, headers=headers)


def _position(digits: str) -> int:
    """A byte position of a Range header; thousands of digits would make ``int`` refuse (a 500), and
    anything past 18 digits lies beyond any clip anyway."""
    return int(digits) if len(digits) <= 18 else _BEYOND_ANY_CLIP

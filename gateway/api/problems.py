"""One middleware turns every error into RFC 9457 problem+json with a stable ``code``.

Storage errors that escape a service are mapped here once: a missing object is 404 ``media_not_found``
(the row outlived its object), anything else under ``StorageError`` (an outage, a refusal, an unknown
region) is 503 ``storage_unavailable`` with Retry-After: the client can do nothing but try again later.
"""

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.api.schemas import Problem
from gateway.errors import ClientError, NotFound, RetryLater, Unavailable
from storage import ObjectNotFound, StorageError

log = logging.getLogger(__name__)
TYPE_BASE = "https://camgate.dev/problems/"
STORAGE_RETRY_AFTER_S = 30

# aiohttp's own HTTP errors (no route, wrong method, body too large) get stable codes too.
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> web.Response:
    """Serialises a problem with the right media type."""
    return web.Response(
        status=problem.status,
        text=problem.model_dump_json(exclude_none=True),
        content_type="application/problem+json",
        headers=headers,
    )


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Maps ClientError, aiohttp HTTP errors and unexpected exceptions to problem+json."""
    try:
        try:
            return await handler(request)
        except StorageError as exc:
            raise _storage_problem(request, exc) from exc
    except ClientError as exc:
        headers = dict(exc.extra.get("headers") or {})  # e.g. Content-Range on a 416
        retry_after = exc.retry_after if isinstance(exc, RetryLater) else None
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        return problem_response(
            Problem(
                type=TYPE_BASE + exc.code,
                title=exc.title,
                status=exc.status,
                detail=exc.detail,
                code=exc.code,
                instance=request.path,
                errors=exc.extra.get("errors"),
                retry_after=retry_after,
            ),
            headers,
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, f"http_{exc.status}")
        return problem_response(
            Problem(
                type=TYPE_BASE + code,
                title=exc.reason,
                status=exc.status,
                detail=f"{exc.reason}: {request.method} {request.path}",
                code=code,
                instance=request.path,
            ),
            {k: v for k, v in exc.headers.items() if k == "Allow"},
        )
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem_response(
            Problem(
                type=TYPE_BASE + "internal_error",
                title="Internal server error",
                status=500,
                detail="something went wrong on our side; it has been logged",
                code="internal_error",
                instance=request.path,
            )
        )


def _storage_problem(request: web.Request, exc: StorageError) -> ClientError:
    if isinstance(exc, ObjectNotFound):
        log.warning("%s %s: a row names an object that is gone: %s", request.method, request.path, exc)
        return NotFound("media_not_found", "the media of this item is no longer stored")
    log.warning("%s %s: object store failed: %r", request.method, request.path, exc)
    return Unavailable(
        "storage_unavailable",
        "the media store cannot be reached right now; try again later",
        retry_after=STORAGE_RETRY_AFTER_S,
    )

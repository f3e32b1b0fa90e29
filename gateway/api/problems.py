"""One middleware turns every error into RFC 9457 problem+json with a stable ``code``."""

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.api.schemas import Problem
from gateway.errors import ClientError, RetryLater

log = logging.getLogger(__name__)
TYPE_BASE = "https://camgate.dev/problems/"

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
        return await handler(request)
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

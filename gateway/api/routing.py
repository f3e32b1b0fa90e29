"""Declared routes: each operation names its body, query and response models, so one declaration
drives request parsing, response serialisation and the OpenAPI document."""

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.web_protocol import RequestPayloadError
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from gateway.api.schemas import Problem
from gateway.api.schemas import Request as RequestModel
from gateway.errors import InvalidRequest, MalformedRequest, NotFound, PayloadTooLarge, Unauthenticated
from gateway.services.accounts import Principal
from gateway.untrusted import UNSAFE_TEXT, JsonRejected, loads

M = TypeVar("M", bound=BaseModel)
MAX_BODY_BYTES = web.AppKey("max_body_bytes", int)
CLIENT_ADDRESS = web.RequestKey("client_address", str)

# Request bodies are flat (the deepest holds two objects); the bound stays far below the depth at which
# json.loads would recurse out of stack, and well above brackets a password may hold.
MAX_BODY_CONTAINERS = 512
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Every id in a path is a uuid; anything else cannot name a row and answers as an unknown id does.
PATH_IDS = {
    "clip_id": "clip_not_found",
    "device_id": "device_not_found",
    "event_id": "event_not_found",
    "session_id": "session_not_found",
    "subscription_id": "subscription_not_found",
    "target_id": "push_target_not_found",
}


@dataclass(frozen=True)
class Reply:
    """A response body with a status other than the operation's default."""

    body: BaseModel
    status: int


class Call:
    """One request as a handler sees it: parsed and validated already."""

    def __init__(
        self,
        request: web.Request,
        principal: Principal | None,
        body: BaseModel | None,
        query: BaseModel | None,
    ) -> None:
        self.request = request
        self._principal = principal
        self._body = body
        self._query = query

    @property
    def principal(self) -> Principal:
        """The authenticated caller (only on operations declared with auth)."""
        if self._principal is None:
            raise RuntimeError("operation declared without auth")
        return self._principal

    @property
    def account_id(self) -> str:
        """The caller's account id."""
        return self.principal.account_id

    def body(self, model: type[M]) -> M:
        """The validated JSON body, typed as the declared model."""
        if not isinstance(self._body, model):
            raise RuntimeError(f"operation did not declare body {model.__name__}")
        return self._body

    def query(self, model: type[M]) -> M:
        """The validated query parameters, typed as the declared model."""
        if not isinstance(self._query, model):
            raise RuntimeError(f"operation did not declare query {model.__name__}")
        return self._query

    def path(self, name: str) -> str:
        """A path parameter."""
        return self.request.match_info[name]

    @property
    def address(self) -> str:
        """The client's address, as resolved by the address middleware."""
        return self.request.get(CLIENT_ADDRESS) or self.request.remote or ""


Result = BaseModel | Reply | web.StreamResponse | None
Handler = Callable[[Call], Awaitable[Result]]
Authenticate = Callable[[web.Request, str], Awaitable[Principal]]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    tag: str
    handler: Handler
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    response: type[BaseModel] | None
    status: int
    auth: bool
    other_statuses: tuple[int, ...] = ()


@dataclass
class Api:
    """The set of operations; ``install`` adds them to an aiohttp app."""

    title: str
    version: str
    operations: list[Operation] = field(default_factory=list)

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        tag: str,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        status: int = 200,
        auth: bool = True,
        other_statuses: tuple[int, ...] = (),
    ) -> Callable[[Handler], Handler]:
        """Declares an operation."""

        def register(handler: Handler) -> Handler:
            self.operations.append(
                Operation(
                    method, path, summary, tag, handler, body, query, response, status, auth, other_statuses
                )
            )
            return handler

        return register

    def install(self, app: web.Application, authenticate: Authenticate) -> None:
        """Adds every operation's view to the app's router."""
        for op in self.operations:
            app.router.add_route(op.method, op.path, _view(op, authenticate))

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI 3.1 document."""
        models: set[type[BaseModel]] = {Problem}
        for op in self.operations:
            models.update(m for m in (op.body, op.response) if m is not None)
        keyed: list[tuple[type[BaseModel], JsonSchemaMode]] = [
            (m, _mode(m)) for m in sorted(models, key=lambda m: m.__name__)
        ]
        refs, defs = models_json_schema(keyed, ref_template="#/components/schemas/{model}")
        paths: dict[str, dict[str, Any]] = {}
        for op in self.operations:
            paths.setdefault(op.path, {})[op.method.lower()] = _operation_doc(op, refs)
        return {
            "openapi": "3.1.0",
            "info": {"title": self.title, "version": self.version},
            "paths": paths,
            "components": {
                "schemas": defs.get("$defs", {}),
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            },
        }


def _mode(model: type[BaseModel]) -> JsonSchemaMode:
    """Requests are documented as they validate, responses as they serialise."""
    return "validation" if issubclass(model, RequestModel) else "serialization"


def _operation_doc(op: Operation, refs: dict[Any, Any]) -> dict[str, Any]:
    def ref(model: type[BaseModel]) -> dict[str, Any]:
        return {"content": {"application/json": {"schema": refs[(model, _mode(model))]}}}

    problem = {"content": {"application/problem+json": {"schema": refs[(Problem, "serialization")]}}}
    responses: dict[str, Any] = {}
    for status in (op.status, *op.other_statuses):
        doc: dict[str, Any] = {"description": "Success"}
        if op.response is not None and status != 204:
            doc.update(ref(op.response))
        responses[str(status)] = doc
    responses["default"] = {"description": "Problem (RFC 9457)", **problem}
    doc = {
        "summary": op.summary,
        "tags": [op.tag],
        "operationId": op.handler.__name__,
        "responses": responses,
    }
    params = [
        {"name": name, "in": "path", "required": True, "schema": _path_schema(name)}
        for name in _path_params(op.path)
    ]
    if op.query is not None:
        schema = op.query.model_json_schema()
        for name, prop in schema.get("properties", {}).items():
            params.append(
                {
                    "name": name,
                    "in": "query",
                    "required": name in schema.get("required", []),
                    "schema": _without_null(prop),
                }
            )
    if params:
        doc["parameters"] = params
    if op.body is not None:
        doc["requestBody"] = {"required": True, **ref(op.body)}
    if op.auth:
        doc["security"] = [{"bearer": []}]
    return doc


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]


def _without_null(prop: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent rather than null: ``X | None`` is documented as ``X``."""
    variants = [v for v in prop.get("anyOf", []) if v != {"type": "null"}]
    if len(variants) != 1 or len(prop["anyOf"]) != 2:
        return prop
    rest = {k: v for k, v in prop.items() if k not in ("anyOf", "default")}
    return {**variants[0], **rest}


def _path_schema(name: str) -> dict[str, Any]:
    if name in PATH_IDS:
        return {"type": "string", "format": "uuid"}
    return {"type": "string"}


def _check_path(request: web.Request) -> None:
    for name, value in request.match_info.items():
        code = PATH_IDS.get(name)
        if code is not None and _UUID.fullmatch(value) is None:
            raise NotFound(code, f"no such {name.removesuffix('_id').replace('_', ' ')}")


def _view(
    op: Operation, authenticate: Authenticate
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def view(request: web.Request) -> web.StreamResponse:
        principal = await _principal(request, authenticate) if op.auth else None
        _check_path(request)
        body = await _parse_body(request, op.body) if op.body is not None else None
        query = _validate(op.query, dict(request.query)) if op.query is not None else None
        result = await op.handler(Call(request, principal, body, query))
        if result is None:
            return web.Response(status=op.status)
        if isinstance(result, web.StreamResponse):
            return result
        if isinstance(result, Reply):
            return web.json_response(text=result.body.model_dump_json(), status=result.status)
        return web.json_response(text=result.model_dump_json(), status=op.status)

    view.__name__ = op.handler.__name__
    return view


async def _principal(request: web.Request, authenticate: Authenticate) -> Principal:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated(
            "missing_token", "send 'Authorization: Bearer <token>' (from POST /v1/sessions)"
        )
    return await authenticate(request, token.strip())


async def _read_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(
            "body_too_large", f"the body is larger than {request.app[MAX_BODY_BYTES]} bytes"
        ) from None
    except (RequestPayloadError, BadHttpMessage):  # e.g. Content-Encoding: gzip on bytes that are not gzip
        raise MalformedRequest(
            "malformed_body", "the body could not be read as its headers describe"
        ) from None


async def _parse_body(request: web.Request, model: type[M]) -> M:
    if request.content_type != "application/json":
        raise MalformedRequest(
            "unsupported_media_type",
            f"send the body as application/json, not {request.content_type or 'nothing'}",
        )
    raw = await _read_body(request)
    try:
        data = loads(raw, max_containers=MAX_BODY_CONTAINERS)
    except JsonRejected as exc:  # invalid UTF-8 or JSON, too deep, a number of thousands of digits
        raise MalformedRequest("malformed_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("validation_failed", "the body must be a JSON object")
    return _validate(model, data)


def _validate(model: type[M], data: dict[str, Any]) -> M:
    _refuse_control_characters(data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # The offending input is not echoed: it may be a password.
        errors = [
            {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"], "type": err["type"]}
            for err in exc.errors()
        ]
        summary = "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors[:5])
        raise InvalidRequest("validation_failed", summary, errors=errors) from None


def _refuse_control_characters(data: Any, loc: tuple[str | int, ...] = ()) -> None:
    """InvalidRequest naming every string (keys too) of ``data`` that holds a control character."""
    errors = [
        {
            "field": ".".join(str(p) for p in where),
            "message": "control characters are not allowed",
            "type": "control_character",
        }
        for where in _control_strings(data, loc)
    ]
    if errors:
        summary = "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors[:5])
        raise InvalidRequest("validation_failed", summary, errors=errors)


def _control_strings(data: Any, loc: tuple[str | int, ...]) -> list[tuple[str | int, ...]]:
    # Recursion is bounded: bodies hold at most MAX_BODY_CONTAINERS containers, queries none.
    if isinstance(data, str):
        return [loc] if UNSAFE_TEXT.search(data) else []
    if isinstance(data, dict):
        found = [(*loc, key) for key in data if UNSAFE_TEXT.search(key)]
        for key, value in data.items():
            found += _control_strings(value, (*loc, key))
        return found
    if isinstance(data, list):
        return [where for i, item in enumerate(data) for where in _control_strings(item, (*loc, i))]
    return []

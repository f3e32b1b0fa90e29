"""Push targets: where an account's alerts are pushed (signed webhooks for now; see docs/push.md)."""

import ipaddress
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from gateway.api.routing import Call
from gateway.api.schemas import Request, Response
from gateway.api.state import api, services
from gateway.ports import PushTarget


class PushTargetIn(Request):
    kind: Literal["webhook"] = Field(description="The provider; only signed webhooks so far.")
    url: str = Field(
        min_length=1, max_length=2000, description="https:// (or http://) URL to POST alerts to."
    )

    @field_validator("url")
    @classmethod
    def _dns_host(cls, value: str) -> str:
        # A host no DNS name can spell (an empty or 64+ character label) made the resolver raise
        # UnicodeError (a 500); the address rules themselves are the push service's.
        try:
            host = urlsplit(value).hostname
        except ValueError:
            return value  # left to the push service's own URL checks
        if host and not _is_ip(host):
            try:
                host.encode("idna").decode("idna")
            except UnicodeError:
                raise ValueError("the URL's host is not a valid DNS name") from None
        return value


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class PushTargetOut(Response):
    id: str
    kind: str
    url: str
    created_at: datetime


class PushTargetCreated(PushTargetOut):
    secret: str | None = Field(
        description="The HMAC-SHA256 key of X-Camgate-Signature; shown only in this response."
    )


class PushTargetList(Response):
    items: list[PushTargetOut]


def target_out(target: PushTarget) -> PushTargetOut:
    """The API view of a push target (no secret)."""
    return PushTargetOut(id=target.id, kind=target.kind, url=target.address, created_at=target.created_at)


@api.route(
    "POST",
    "/v1/push-targets",
    summary="Register a push target; the response shows its signing secret, once",
    tag="push",
    body=PushTargetIn,
    response=PushTargetCreated,
    status=201,
)
async def add_push_target(call: Call) -> PushTargetCreated:
    form = call.body(PushTargetIn)
    target, secret = await services(call).push.add_target(
        call.account_id, form.kind, form.url, client_address=call.address
    )
    return PushTargetCreated(**target_out(target).model_dump(), secret=secret)


@api.route(
    "GET", "/v1/push-targets", summary="List the account's push targets", tag="push", response=PushTargetList
)
async def list_push_targets(call: Call) -> PushTargetList:
    return PushTargetList(
        items=[target_out(t) for t in await services(call).push.list_targets(call.account_id)]
    )


@api.route("DELETE", "/v1/push-targets/{target_id}", summary="Remove a push target", tag="push", status=204)
async def remove_push_target(call: Call) -> None:
    await services(call).push.remove_target(
        call.account_id, call.path("target_id"), client_address=call.address
    )

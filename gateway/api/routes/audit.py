"""The account holder's audit log."""

import re

from gateway.api import schemas as s
from gateway.api.routing import Call
from gateway.api.state import api, services
from gateway.errors import InvalidRequest
from gateway.services import audit


@api.route(
    "GET",
    "/v1/audit",
    summary="Read the audit log of sensitive actions on the account",
    tag="audit",
    query=s.PageQuery,
    response=s.AuditPage,
)
async def read_audit(call: Call) -> s.AuditPage:
    q = call.query(s.PageQuery)
    before = None
    if q.cursor is not None:
        # Ids are 64-bit: more digits overflowed the database driver (a 500).
        if re.fullmatch(r"[0-9]{1,18}", q.cursor) is None:
            raise InvalidRequest("invalid_cursor", "cursor must be the next_cursor of a previous page")
        before = int(q.cursor)
    entries = await audit.page(services(call).engine, call.account_id, limit=q.limit, before_id=before)
    items = [s.AuditEntryOut.model_validate(e, from_attributes=True) for e in entries]
    more = len(entries) == q.limit
    return s.AuditPage(items=items, next_cursor=str(entries[-1].id) if more and entries else None)

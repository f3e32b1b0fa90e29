"""What a failure while processing a camera message means for that message (docs/protocol.md).

- ``HOLD``: one of our own dependencies is down or refuses us (database unreachable, object store down or
  misconfigured, no store for the account's region). Nothing is wrong with the message: it stays
  unacknowledged and is retried with backoff for as long as it takes, counted in
  ``camgate_ingest_held_total`` so operators are alerted, and readiness fails once the queue's head has
  waited longer than ``ingest.stuck_after_s``.
- ``PERMANENT``: the database refused what the message made us write (a value it cannot store, a broken
  constraint): retrying gives the same answer, so the message is dead-lettered at once.
- ``UNEXPECTED``: anything else (a bug): retried a few times, then dead-lettered.

Drivers differ in what they raise. asyncpg's server errors reach SQLAlchemy as a plain ``DBAPIError``
carrying the SQLSTATE (``CharacterNotInRepertoireError`` for a NUL in a text value, class 22), and its
client-side ``DataError`` (a value that cannot be encoded) is an ``InterfaceError``; sqlite3 raises
``OperationalError`` for a locked or failing database and ``IntegrityError``/``ProgrammingError``/
``InterfaceError`` for what the statement itself got wrong.
"""

import asyncio
from enum import StrEnum

from sqlalchemy import exc as sa

from storage import StorageRefused, StorageUnavailable, UnknownRegion


class Failure(StrEnum):
    HOLD = "hold"
    PERMANENT = "permanent"
    UNEXPECTED = "unexpected"


# SQLSTATE classes that describe the server, not the statement: connection (08), resources (53), operator
# intervention such as a shutdown (57), system errors (58), rollbacks (40: serialization, deadlock), lock
# waits (55), read-only after a failover (25) and internal errors (XX).
_TRANSIENT_SQLSTATE = frozenset({"08", "25", "40", "53", "55", "57", "58", "XX"})


def classify(exc: BaseException) -> Failure:
    """How the consumer treats ``exc`` raised while processing a message."""
    if isinstance(exc, StorageUnavailable | StorageRefused | UnknownRegion | OSError | asyncio.TimeoutError):
        return Failure.HOLD
    if isinstance(exc, sa.TimeoutError | sa.DisconnectionError):  # pool exhausted, connection lost
        return Failure.HOLD
    if isinstance(exc, sa.DBAPIError):
        return Failure.HOLD if database_down(exc) else Failure.PERMANENT
    return Failure.UNEXPECTED


def database_down(exc: sa.DBAPIError) -> bool:
    """True when ``exc`` says the database is unavailable rather than that the statement is wrong."""
    if exc.connection_invalidated:
        return True
    state = getattr(exc.orig, "sqlstate", None)
    if isinstance(state, str) and len(state) == 5:
        return state[:2] in _TRANSIENT_SQLSTATE
    original = exc.orig.__cause__ if exc.orig is not None else None
    if isinstance(original, ValueError):  # asyncpg's client-side DataError: a value it cannot encode
        return False
    if isinstance(original, OSError | asyncio.TimeoutError | ConnectionError):
        return True
    # Without an SQLSTATE: sqlite3's OperationalError is "database is locked" or an I/O error, and an
    # InterfaceError from asyncpg is a closed connection; sqlite3's InterfaceError is a bad parameter.
    if isinstance(exc, sa.OperationalError):
        return True
    if isinstance(exc, sa.InterfaceError):
        return exc.orig is None or type(exc.orig).__module__ != "sqlite3"
    return False


def is_permanent(exc: BaseException) -> bool:
    """A deterministic database refusal: the same statement will fail the same way."""
    return classify(exc) is Failure.PERMANENT

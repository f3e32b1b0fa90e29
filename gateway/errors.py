"""camgate's exceptions.

Everything camgate raises on purpose derives from ``CamgateError``. Errors that reach a client carry a
stable ``code`` (part of the API contract: clients switch on it), an HTTP ``status`` and a ``title``;
the API's error middleware turns them into RFC 9457 problem+json. The tree:

- ``CamgateError``
  - ``ConfigError`` — settings are missing or invalid; raised at start, never to a client.
  - ``ClientError`` — the request cannot be served as asked (4xx). Subclasses name the intent:
    ``InvalidRequest`` (400/422), ``Unauthenticated`` (401), ``PaymentRequired`` (402: a cloud plan is
    needed, or a payment was declined), ``Forbidden`` (403), ``NotFound`` (404),
    ``Conflict`` (409), and under ``RetryLater`` (with ``retry_after``): ``Locked`` (423),
    ``RateLimited`` (429), ``Unavailable`` (503: a provider we depend on is down).
"""

from typing import Any, ClassVar


class CamgateError(Exception):
    """Root of camgate's own exceptions."""


class ConfigError(CamgateError):
    """The configuration cannot be used; the message lists every problem."""


class ClientError(CamgateError):
    """An error the client caused or must react to, with a stable code."""

    status: ClassVar[int] = 400
    title: ClassVar[str] = "Bad request"

    def __init__(self, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.extra = extra


class InvalidRequest(ClientError):
    status = 422
    title = "Invalid request"


class MalformedRequest(ClientError):
    status = 400
    title = "Malformed request"


class PayloadTooLarge(ClientError):
    status = 413
    title = "Payload too large"


class Unauthenticated(ClientError):
    status = 401
    title = "Authentication required"


class PaymentRequired(ClientError):
    status = 402
    title = "Payment required"


class Forbidden(ClientError):
    status = 403
    title = "Forbidden"


class NotFound(ClientError):
    status = 404
    title = "Not found"


class Conflict(ClientError):
    status = 409
    title = "Conflict"


class RetryLater(ClientError):
    """A refusal that lifts by itself; ``retry_after`` (seconds) becomes the Retry-After header."""

    def __init__(self, code: str, detail: str, *, retry_after: int, **extra: Any) -> None:
        super().__init__(code, detail, **extra)
        self.retry_after = retry_after


class Locked(RetryLater):
    status = 423
    title = "Locked"


class RateLimited(RetryLater):
    status = 429
    title = "Too many requests"


class Unavailable(RetryLater):
    status = 503
    title = "Service unavailable"

"""Payment providers behind the ``PaymentProvider`` port (gateway/ports.py).

SPEC 6 needs no real payment network: ``LedgerProvider`` accepts every charge and refund and hands back a
reference. The ledger itself is the ``payments`` table (``record``, ``charge_ref``), which the plans
service writes in the same transaction as the subscription change the money is for, so the two never
disagree. A real provider
(a card network) would translate its refusals into ``PaymentDeclined`` here, at the edge.
"""

import logging
import uuid
from datetime import datetime
from typing import Literal

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters.db.tables import payments
from gateway.domain.plans import Money
from gateway.errors import PaymentRequired
from gateway.ports import Receipt

log = logging.getLogger(__name__)


class PaymentDeclined(PaymentRequired):
    """The provider refused the charge or refund (card declined, limit reached, …): HTTP 402."""

    title = "Payment declined"

    def __init__(self, detail: str = "the payment provider declined the payment", **extra: object) -> None:
        super().__init__("payment_declined", detail, **extra)


def _check(amount: Money) -> None:
    if amount.minor < 0:
        # The ledger never holds a negative amount: a refund is its own kind, not a negative charge.
        raise ValueError(f"amounts are never negative, got {amount}")


class LedgerProvider:
    """The "no real payment network" provider: every charge and refund is accepted.

    Idempotent on ``reference``, like a real provider's idempotency key (a card network's
    ``Idempotency-Key`` header or request id): a charge or refund repeated with a reference already seen
    returns the first receipt and moves no money again. This stand-in remembers references in memory
    (for the life of the process); a real provider keeps them on its side for days.
    """

    name = "ledger"

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], tuple[Money, Receipt]] = {}

    async def charge(self, account_id: str, amount: Money, reference: str, description: str) -> Receipt:
        """Accepts the charge; the reference is a fresh ``ledger-<uuid>`` (the first one for a repeat)."""
        return self._once("charge", account_id, amount, reference, f"({description})")

    async def refund(self, account_id: str, amount: Money, reference: str, original_ref: str) -> Receipt:
        """Accepts the refund; the reference is a fresh ``ledger-<uuid>`` (the first one for a repeat)."""
        return self._once("refund", account_id, amount, reference, f"of {original_ref}")

    def _once(self, kind: str, account_id: str, amount: Money, reference: str, about: str) -> Receipt:
        _check(amount)
        seen = self._seen.get((kind, reference))
        if seen is not None:
            first_amount, receipt = seen
            if first_amount != amount:
                # A real provider refuses a reused key with other parameters; the first outcome stands.
                log.warning("ledger %s %s repeated with %s, first %s", kind, reference, amount, first_amount)
            log.info("ledger %s %s repeated: %s", kind, reference, receipt.provider_ref)
            return receipt
        receipt = Receipt(self.name, f"ledger-{uuid.uuid4()}")
        self._seen[(kind, reference)] = amount, receipt
        log.info(
            "ledger %s %s for %s %s (account %s): %s",
            kind,
            amount,
            reference,
            about,
            account_id,
            receipt.provider_ref,
        )
        return receipt


async def record(
    conn: AsyncConnection,
    kind: Literal["charge", "refund"],
    *,
    account_id: str,
    subscription_id: str,
    amount: Money,
    receipt: Receipt,
    description: str,
    at: datetime,
) -> None:
    """Writes one ledger row, inside the caller's transaction (the change the money is for)."""
    _check(amount)
    await conn.execute(
        insert(payments).values(
            account_id=account_id,
            subscription_id=subscription_id,
            kind=kind,
            amount=amount.minor,
            currency=amount.currency,
            provider=receipt.provider,
            provider_ref=receipt.provider_ref,
            description=description[:200],
            created_at=at,
        )
    )


async def charge_ref(conn: AsyncConnection, subscription_id: str) -> str:
    """The provider's reference of the charge for a subscription ("" when nothing was charged)."""
    query = select(payments.c.provider_ref).where(
        payments.c.subscription_id == subscription_id, payments.c.kind == "charge"
    )
    return (await conn.execute(query)).scalar_one_or_none() or ""

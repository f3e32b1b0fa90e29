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
    """The "no real payment network" provider: every charge and refund is accepted."""

    name = "ledger"

    async def charge(self, account_id: str, amount: Money, reference: str, description: str) -> Receipt:
        """Accepts the charge; the reference is a fresh ``ledger-<uuid>``."""
        _check(amount)
        receipt = Receipt(self.name, f"ledger-{uuid.uuid4()}")
        log.info("ledger charge %s for %s (%s): %s", amount, reference, description, receipt.provider_ref)
        return receipt

    async def refund(self, account_id: str, amount: Money, reference: str, original_ref: str) -> Receipt:
        """Accepts the refund; the reference is a fresh ``ledger-<uuid>``."""
        _check(amount)
        receipt = Receipt(self.name, f"ledger-{uuid.uuid4()}")
        log.info("ledger refund %s for %s of %s: %s", amount, reference, original_ref, receipt.provider_ref)
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

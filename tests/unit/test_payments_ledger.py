"""The ledger provider (no real payment network) and the decline error a real provider would raise."""

import pytest

from gateway.adapters.payments import LedgerProvider, PaymentDeclined
from gateway.domain.plans import Money
from gateway.errors import PaymentRequired


async def test_every_charge_and_refund_is_accepted_with_a_fresh_reference() -> None:
    ledger = LedgerProvider()
    charge = await ledger.charge("acct-1", Money(399, "USD"), "sub-1", "Basic, monthly")
    refund = await ledger.refund("acct-1", Money(399, "USD"), "sub-1", charge.provider_ref)
    other = await ledger.charge("acct-1", Money(399, "USD"), "sub-2", "Basic, monthly")
    assert charge.provider == refund.provider == "ledger"
    assert all(r.provider_ref.startswith("ledger-") for r in (charge, refund, other))
    assert len({charge.provider_ref, refund.provider_ref, other.provider_ref}) == 3


async def test_a_repeated_reference_returns_the_first_receipt() -> None:
    ledger = LedgerProvider()
    usd = Money(399, "USD")
    refund = await ledger.refund("acct-1", usd, "refund:sub-1", "ledger-x")
    assert await ledger.refund("acct-1", usd, "refund:sub-1", "ledger-x") == refund  # no second payout
    assert await ledger.refund("acct-1", usd, "refund:sub-2", "ledger-x") != refund
    charge = await ledger.charge("acct-1", usd, "charge:sub-1", "Basic, monthly")
    assert charge != refund and await ledger.charge("acct-1", usd, "charge:sub-1", "x") == charge


async def test_negative_amounts_are_refused() -> None:
    ledger = LedgerProvider()
    with pytest.raises(ValueError, match="never negative"):
        await ledger.charge("acct-1", Money(-1, "USD"), "sub-1", "x")
    with pytest.raises(ValueError, match="never negative"):
        await ledger.refund("acct-1", Money(-1, "USD"), "sub-1", "ledger-x")


def test_a_decline_is_a_402_with_a_stable_code() -> None:
    exc = PaymentDeclined()
    assert isinstance(exc, PaymentRequired)
    assert (exc.status, exc.code) == (402, "payment_declined")

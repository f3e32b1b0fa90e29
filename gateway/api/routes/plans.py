"""Cloud-storage plans: the catalogue, buying for a device, a device's plans, refund quotes, cancelling,
(refused) transfers, and the account's storage usage against its quota."""

from datetime import datetime

from gateway.api import plan_schemas as p
from gateway.api.routing import Call
from gateway.api.state import api, services
from gateway.domain.plans import Billing, Money, PlanSpec, status_at
from gateway.services.coverage import MB
from gateway.services.subscription_rows import Held


def money_out(money: Money) -> p.MoneyOut:
    """The API view of an amount."""
    return p.MoneyOut(amount=money.minor, currency=money.currency, display=str(money))


def plan_out(plan: PlanSpec) -> p.PlanOut:
    """The API view of a catalogue entry."""
    return p.PlanOut(
        id=plan.id,
        name=plan.name,
        kind=plan.kind.value,
        video=plan.video,
        video_retention_days=plan.video_retention_days,
        snapshot_retention_days=plan.snapshot_retention_days,
        storage_quota_bytes=plan.storage_quota_mb * MB,
        monthly_price=money_out(plan.monthly_price) if plan.monthly_price is not None else None,
        annual_price=money_out(plan.annual_price) if plan.annual_price is not None else None,
        term_days=plan.term_days,
        billings=[b.value for b in Billing if plan.sold_with(b)],
        sold=plan.sold,
    )


def subscription_out(held: Held, now: datetime) -> p.SubscriptionOut:
    """The API view of a subscription, with its status at ``now``."""
    sub = held.subscription
    return p.SubscriptionOut(
        id=held.id,
        device_id=sub.device_id,
        plan_id=sub.plan_id,
        billing=sub.billing.value,
        status=status_at(sub, now).value,
        starts_at=sub.starts_at,
        ends_at=sub.ends_at,
        auto_renew=sub.auto_renew,
        period=sub.period,
        charged=money_out(sub.amount_paid),
        renewal_of=held.renewal_of,
    )


@api.route("GET", "/v1/plans", summary="The plan catalogue", tag="plans", response=p.PlanList, auth=False)
async def list_plans(call: Call) -> p.PlanList:
    catalogue = services(call).plans.catalogue()
    return p.PlanList(currency=catalogue.currency, items=[plan_out(plan) for plan in catalogue.plans])


@api.route(
    "POST",
    "/v1/devices/{device_id}/plans",
    summary=(
        "Buy a plan for a device (active now, or queued after its current plan); a repeat with the same "
        "Idempotency-Key header returns the first purchase"
    ),
    tag="plans",
    body=p.PurchaseIn,
    response=p.SubscriptionOut,
    status=201,
)
async def buy_plan(call: Call) -> p.SubscriptionOut:
    form = call.body(p.PurchaseIn)
    svc = services(call)
    held = await svc.plans.purchase(
        call.account_id,
        call.path("device_id"),
        form.plan_id,
        Billing(form.billing),
        address=call.address,
        idempotency_key=call.request.headers.get("Idempotency-Key"),
    )
    return subscription_out(held, svc.clock.now())


@api.route(
    "GET",
    "/v1/devices/{device_id}/plans",
    summary="A device's plan now, its current and queued subscriptions and recent ones",
    tag="plans",
    response=p.DevicePlansOut,
)
async def device_plans(call: Call) -> p.DevicePlansOut:
    device_id = call.path("device_id")
    view = await services(call).plans.device_plans(call.account_id, device_id)
    return p.DevicePlansOut(
        device_id=device_id,
        plan_id=view.plan.id,
        current=subscription_out(view.current, view.at) if view.current is not None else None,
        queued=[subscription_out(h, view.at) for h in view.queued],
        items=[subscription_out(h, view.at) for h in view.items],
    )


@api.route(
    "GET",
    "/v1/subscriptions/{subscription_id}/refund-quote",
    summary="What cancelling now would refund, and until when access would last",
    tag="plans",
    response=p.RefundQuoteOut,
)
async def refund_quote(call: Call) -> p.RefundQuoteOut:
    subscription_id = call.path("subscription_id")
    quote = await services(call).plans.refund_quote(call.account_id, subscription_id)
    return p.RefundQuoteOut(
        subscription_id=subscription_id,
        refund=money_out(quote.refund),
        status=quote.status.value,
        ends_at=quote.ends_at,
    )


@api.route(
    "POST",
    "/v1/subscriptions/{subscription_id}/cancel",
    summary="Cancel a subscription (no renewal; refund per the plan rules)",
    tag="plans",
    response=p.CancelOut,
)
async def cancel_subscription(call: Call) -> p.CancelOut:
    svc = services(call)
    held, refund = await svc.plans.cancel(call.account_id, call.path("subscription_id"), address=call.address)
    return p.CancelOut(subscription=subscription_out(held, svc.clock.now()), refund=money_out(refund))


@api.route(
    "POST",
    "/v1/subscriptions/{subscription_id}/transfer",
    summary="Move a plan to another device: always refused (409 plan_not_transferable)",
    tag="plans",
    body=p.TransferIn,
    status=204,
)
async def transfer_subscription(call: Call) -> None:
    target = call.body(p.TransferIn).device_id
    await services(call).plans.transfer(call.account_id, call.path("subscription_id"), target)


@api.route(
    "GET",
    "/v1/storage/usage",
    summary="The account's stored snapshots and clips against its storage quota",
    tag="plans",
    response=p.StorageUsageOut,
)
async def storage_usage(call: Call) -> p.StorageUsageOut:
    used, quota = await services(call).plans.storage(call.account_id)
    return p.StorageUsageOut(
        used_bytes=used.total_bytes,
        quota_bytes=quota,
        snapshots=p.CountBytes(count=used.snapshot_count, bytes=used.snapshot_bytes),
        clips=p.CountBytes(count=used.clip_count, bytes=used.clip_bytes),
    )

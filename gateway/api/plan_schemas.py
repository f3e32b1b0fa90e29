"""Request and response bodies of the plans, subscriptions and storage-usage operations (docs/plans.md).
Money is always ``{amount (minor units), currency, display}``; no float carries a price."""

from datetime import datetime
from typing import Literal

from pydantic import Field

from gateway.api.schemas import Request, Response

BillingName = Literal["monthly", "annual", "trial"]
StatusName = Literal["queued", "active", "cancelled", "ended", "refunded"]


class MoneyOut(Response):
    amount: int = Field(description="Minor units of the currency (cents): 399 is 3.99.")
    currency: str = Field(description="ISO 4217 code.")
    display: str = Field(description="For people, e.g. '3.99 USD'.")


class PlanOut(Response):
    id: str
    name: str
    kind: Literal["free", "trial", "paid"]
    video: bool = Field(description="Event clips are stored in the cloud.")
    video_retention_days: int = Field(description="0 without video.")
    snapshot_retention_days: int
    storage_quota_bytes: int = Field(description="What a device on this plan adds to its account's quota.")
    monthly_price: MoneyOut | None
    annual_price: MoneyOut | None
    term_days: int | None = Field(description="The trial's length; null for the others.")
    billings: list[BillingName] = Field(description="How it can be bought; empty: not sold.")
    sold: bool = Field(description="False for a retired plan: existing subscriptions keep it.")


class PlanList(Response):
    currency: str
    items: list[PlanOut]


class PurchaseIn(Request):
    plan_id: str = Field(min_length=1, max_length=40)
    billing: BillingName = Field(description="'trial' for the trial plan.")


class SubscriptionOut(Response):
    id: str
    device_id: str
    plan_id: str
    billing: BillingName
    status: StatusName = Field(
        description="Now: queued until it starts, active, cancelled (no renewal; "
        "access until ends_at), ended, or refunded (cancelled before it started)."
    )
    starts_at: datetime
    ends_at: datetime = Field(description="End of the paid period (exclusive).")
    auto_renew: bool
    period: int = Field(description="1 for the first monthly period, 2 after the first renewal, …")
    charged: MoneyOut = Field(description="What was charged for this period.")
    renewal_of: str | None = Field(description="The period this one renewed.")


class DevicePlansOut(Response):
    device_id: str
    plan_id: str = Field(description="The plan in force now; 'free' without a subscription.")
    current: SubscriptionOut | None
    queued: list[SubscriptionOut] = Field(description="Bought to start when the current one ends.")
    items: list[SubscriptionOut] = Field(description="Recent subscriptions of the device, newest first.")


class RefundQuoteOut(Response):
    subscription_id: str
    refund: MoneyOut
    status: StatusName = Field(description="The status after cancelling now.")
    ends_at: datetime = Field(description="Access would continue until then.")


class CancelOut(Response):
    subscription: SubscriptionOut
    refund: MoneyOut


class TransferIn(Request):
    device_id: str = Field(min_length=1, max_length=36)


class CountBytes(Response):
    count: int
    bytes: int


class StorageUsageOut(Response):
    used_bytes: int = Field(
        description="Snapshots (with thumbnails) and clips stored now, and clip parts staged."
    )
    quota_bytes: int = Field(description="The sum over the account's devices of their plan's quota.")
    snapshots: CountBytes
    clips: CountBytes

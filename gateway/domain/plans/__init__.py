"""Cloud-storage plans (SPEC section 6, terms 7 and 8): the catalogue and the subscription rules.

Pure: no I/O, no clock reads. Money is integer minor units (``money``), months are calendar months from
an anchor (``months``), the catalogue is validated configuration (``catalogue``), and purchases,
cancellations, refunds, renewals and retention are decisions over values (``subscriptions``). The rules
and worked refund examples are in docs/plans.md.
"""

from gateway.domain.plans.catalogue import (
    DEFAULT_CONFIG,
    Billing,
    Catalogue,
    CatalogueInvalid,
    PlanKind,
    PlanRefused,
    PlanSpec,
    default_catalogue,
)
from gateway.domain.plans.money import Money
from gateway.domain.plans.months import add_months, months_begun
from gateway.domain.plans.subscriptions import (
    ANNUAL_MONTHS,
    Purchase,
    Renewal,
    Retention,
    Status,
    Subscription,
    access_allowed,
    active_on,
    cancel,
    in_force,
    move,
    purchase,
    refund_quote,
    renew_due,
    retention_for,
    status_at,
)

__all__ = [
    "ANNUAL_MONTHS",
    "DEFAULT_CONFIG",
    "Billing",
    "Catalogue",
    "CatalogueInvalid",
    "Money",
    "PlanKind",
    "PlanRefused",
    "PlanSpec",
    "Purchase",
    "Renewal",
    "Retention",
    "Status",
    "Subscription",
    "access_allowed",
    "active_on",
    "add_months",
    "cancel",
    "default_catalogue",
    "in_force",
    "months_begun",
    "move",
    "purchase",
    "refund_quote",
    "renew_due",
    "retention_for",
    "status_at",
]

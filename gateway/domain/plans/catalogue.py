"""The plan catalogue: what can be bought, for how much, and how long recordings are kept under it.

Built from plain configuration data (``Catalogue.from_config``) and validated as a whole: every problem is
listed in one ``CatalogueInvalid`` at start, never discovered later at a purchase.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from gateway.domain.plans.money import Money
from gateway.errors import ConfigError, Conflict

_PLAN_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
_CURRENCY = re.compile(r"[A-Z]{3}")


class PlanRefused(Conflict):
    """A plan operation the rules do not allow; ``code`` says which rule (stable, clients switch on it)."""

    title = "Plan operation refused"


class UnknownPlan(PlanRefused):
    """A plan id the catalogue does not have: the request names something that does not exist (422)."""

    status = 422
    title = "Unknown plan"


class CatalogueInvalid(ConfigError):
    """The configured catalogue breaks its rules; the message lists every problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("plan catalogue is invalid: " + "; ".join(problems))
        self.problems = tuple(problems)


class PlanKind(StrEnum):
    FREE = "free"  # what a device has without a subscription: never bought
    TRIAL = "trial"  # once per account, one device, fixed term, no price
    PAID = "paid"


class Billing(StrEnum):
    MONTHLY = "monthly"  # renews automatically each calendar month until cancelled (terms 7.2.2)
    ANNUAL = "annual"  # twelve calendar months paid in full (terms 7.2.1)
    TRIAL = "trial"  # the free trial's term (terms 7.1)


@dataclass(frozen=True)
class PlanSpec:
    """One catalogue entry. Prices are ``None`` where the plan is not sold with that billing."""

    id: str
    name: str
    kind: PlanKind
    video: bool  # includes cloud storage of event clips
    video_retention_days: int  # 0 when ``video`` is false
    snapshot_retention_days: int
    storage_quota_mb: int  # what a device on this plan adds to its account's storage quota
    monthly_price: Money | None = None
    annual_price: Money | None = None
    term_days: int | None = None  # the trial's length; None for the others
    sold: bool = True  # retired plans stay listed so existing subscriptions keep their retention

    def sold_with(self, billing: Billing) -> bool:
        """Whether the plan can be bought with ``billing``."""
        if billing is Billing.TRIAL:
            return self.kind is PlanKind.TRIAL and self.sold
        return self.kind is PlanKind.PAID and self.sold and self.price(billing) is not None

    def price(self, billing: Billing) -> Money | None:
        """What one monthly or annual period costs; None for the trial or where not sold that way."""
        if billing is Billing.MONTHLY:
            return self.monthly_price
        if billing is Billing.ANNUAL:
            return self.annual_price
        return None

    def problems(self, currency: str) -> list[str]:
        """What is wrong with this entry on its own, for a catalogue priced in ``currency``."""
        out: list[str] = []
        where = f"plan {self.id!r}"
        if not _PLAN_ID.fullmatch(self.id):
            out.append(f"{where}: id must be lowercase letters, digits and dashes")
        if not self.name.strip():
            out.append(f"{where}: name is empty")
        if self.snapshot_retention_days <= 0:
            out.append(f"{where}: snapshot_retention_days must be > 0")
        if self.storage_quota_mb <= 0:
            out.append(f"{where}: storage_quota_mb must be > 0")
        if self.video and self.video_retention_days <= 0:
            out.append(f"{where}: video_retention_days must be > 0 for a plan with video")
        if not self.video and self.video_retention_days != 0:
            out.append(f"{where}: video_retention_days must be 0 for a plan without video")
        prices = [p for p in (self.monthly_price, self.annual_price) if p is not None]
        for p in prices:
            if p.currency != currency:
                out.append(f"{where}: priced in {p.currency}, the catalogue is in {currency}")
            if p.minor < 0:
                out.append(f"{where}: prices must be >= 0")
        if self.kind is PlanKind.PAID:
            if not prices:
                out.append(f"{where}: a paid plan needs a monthly or an annual price")
            if self.annual_price is not None and self.monthly_price is None:
                # Annual refunds are prorated at the monthly price (terms 8.2.1), so it must exist.
                out.append(f"{where}: an annual price needs a monthly price too")
        elif prices:
            out.append(f"{where}: a {self.kind} plan has no price")
        if self.kind is PlanKind.TRIAL:
            if self.term_days is None or self.term_days <= 0:
                out.append(f"{where}: the trial needs term_days > 0")
        elif self.term_days is not None:
            out.append(f"{where}: only the trial has term_days")
        return out


@dataclass(frozen=True)
class Catalogue:
    """The validated set of plans, all priced in one currency.

    ``day`` is the length of the day that trial terms and retentions count in: a real day, except in
    demonstrations (``camgate demo`` runs a 14-day trial in minutes). Calendar months stay calendar months.
    """

    currency: str
    plans: tuple[PlanSpec, ...]
    day: timedelta = timedelta(days=1)

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not _CURRENCY.fullmatch(self.currency):
            problems.append(f"currency must be an ISO 4217 code, not {self.currency!r}")
        if self.day.total_seconds() < 1:
            problems.append("day_seconds must be >= 1")
        seen: set[str] = set()
        for plan in self.plans:
            if plan.id in seen:
                problems.append(f"plan id {plan.id!r} appears twice")
            seen.add(plan.id)
            problems.extend(plan.problems(self.currency))
        for kind in (PlanKind.FREE, PlanKind.TRIAL):
            count = sum(p.kind is kind for p in self.plans)
            if count != 1:
                problems.append(f"exactly one {kind} plan is needed, found {count}")
        if problems:
            raise CatalogueInvalid(problems)

    def plan(self, plan_id: str) -> PlanSpec:
        """The plan called ``plan_id``; ``UnknownPlan('unknown_plan')`` when there is none."""
        for plan in self.plans:
            if plan.id == plan_id:
                return plan
        raise UnknownPlan("unknown_plan", f"there is no plan {plan_id!r}", plan_id=plan_id)

    @property
    def free(self) -> PlanSpec:
        """The plan in force when no subscription is."""
        return next(p for p in self.plans if p.kind is PlanKind.FREE)

    @property
    def trial(self) -> PlanSpec:
        """The trial plan."""
        return next(p for p in self.plans if p.kind is PlanKind.TRIAL)

    @classmethod
    def from_config(cls, data: Mapping[str, Any]) -> Catalogue:
        """Builds a catalogue from plain data: ``{"currency": "USD", "plans": [{...}, ...]}`` with
        prices in minor units (and optionally ``day_seconds``, for demonstrations). Unknown keys and
        wrong types are problems, listed together."""
        problems: list[str] = []
        unknown = set(data) - {"currency", "plans", "day_seconds"}
        if unknown:
            problems.append(f"unknown keys {sorted(unknown)}")
        currency = data.get("currency")
        entries = data.get("plans")
        if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
            problems.append(f"currency must be an ISO 4217 code such as USD, not {currency!r}")
            currency = "XXX"  # ISO's "no currency", so the plans can still be checked
        if not isinstance(entries, list) or not entries:
            problems.append("plans must be a non-empty list")
            entries = []
        day_seconds = data.get("day_seconds", 86400)
        if isinstance(day_seconds, bool) or not isinstance(day_seconds, int) or day_seconds < 1:
            problems.append(f"day_seconds must be a whole number of seconds >= 1, not {day_seconds!r}")
            day_seconds = 86400
        plans = [_plan_from_config(i, e, currency, problems) for i, e in enumerate(entries)]
        if problems:
            raise CatalogueInvalid(problems)
        return cls(currency, tuple(p for p in plans if p is not None), timedelta(seconds=day_seconds))


_FIELDS = {
    "id": str,
    "name": str,
    "kind": str,
    "video": bool,
    "video_retention_days": int,
    "snapshot_retention_days": int,
    "storage_quota_mb": int,
    "monthly_price": int,
    "annual_price": int,
    "term_days": int,
    "sold": bool,
}
_REQUIRED = ("id", "name", "kind", "snapshot_retention_days")
DEFAULT_QUOTA_MB = 1024


def _plan_from_config(index: int, entry: object, currency: str, problems: list[str]) -> PlanSpec | None:
    where = f"plans[{index}]"
    if not isinstance(entry, Mapping):
        problems.append(f"{where} must be a mapping")
        return None
    found = len(problems)
    for key in set(entry) - set(_FIELDS):
        problems.append(f"{where}: unknown key {key!r}")
    for key in _REQUIRED:
        if key not in entry:
            problems.append(f"{where}: {key} is required")
    for key, value in entry.items():
        want = _FIELDS.get(key)
        # bool is an int in Python; a price or a day count of True is a typo, not a number.
        if want is not None and (not isinstance(value, want) or (want is int and isinstance(value, bool))):
            problems.append(f"{where}: {key} must be {want.__name__}, got {value!r}")
    if "kind" in entry and entry["kind"] not in tuple(PlanKind):
        problems.append(f"{where}: kind must be one of {[k.value for k in PlanKind]}")
    if len(problems) > found:
        return None

    def money(key: str) -> Money | None:
        return None if entry.get(key) is None else Money(entry[key], currency)

    video = entry.get("video", entry["kind"] != PlanKind.FREE)
    return PlanSpec(
        id=entry["id"],
        name=entry["name"],
        kind=PlanKind(entry["kind"]),
        video=video,
        video_retention_days=entry.get("video_retention_days", 0),
        snapshot_retention_days=entry["snapshot_retention_days"],
        storage_quota_mb=entry.get("storage_quota_mb", DEFAULT_QUOTA_MB),
        monthly_price=money("monthly_price"),
        annual_price=money("annual_price"),
        term_days=entry.get("term_days"),
        sold=entry.get("sold", True),
    )


DEFAULT_CONFIG: Mapping[str, Any] = {
    "currency": "USD",
    "plans": [
        {
            "id": "free",
            "name": "Free",
            "kind": "free",
            "video": False,
            "snapshot_retention_days": 3,
            "storage_quota_mb": 512,
        },
        {
            "id": "trial",
            "name": "Trial",
            "kind": "trial",
            "term_days": 14,
            "video_retention_days": 7,
            "snapshot_retention_days": 7,
            "storage_quota_mb": 4096,
        },
        {
            "id": "basic-7",
            "name": "Basic (7 days)",
            "kind": "paid",
            "video_retention_days": 7,
            "snapshot_retention_days": 7,
            "storage_quota_mb": 8192,
            "monthly_price": 399,
            "annual_price": 3900,
        },
        {
            "id": "standard-30",
            "name": "Standard (30 days)",
            "kind": "paid",
            "video_retention_days": 30,
            "snapshot_retention_days": 30,
            "storage_quota_mb": 32768,
            "monthly_price": 999,
            "annual_price": 9900,
        },
        {
            "id": "premium-60",
            "name": "Premium (60 days)",
            "kind": "paid",
            "video_retention_days": 60,
            "snapshot_retention_days": 60,
            "storage_quota_mb": 65536,
            "monthly_price": 1499,
            "annual_price": 14900,
        },
    ],
}


def default_catalogue() -> Catalogue:
    """The catalogue of SPEC section 6: free, a 14-day trial with 7 days of video, and 7/30/60-day plans."""
    return Catalogue.from_config(DEFAULT_CONFIG)

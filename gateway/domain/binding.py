"""The binding decision: what happens when someone presents a serial and a label code."""

from dataclasses import dataclass
from enum import StrEnum


class BindOutcome(StrEnum):
    BOUND = "bound"  # newly bound to the caller
    ALREADY_YOURS = "already_yours"  # idempotent success
    BOUND_ELSEWHERE = "bound_elsewhere"
    REJECTED = "rejected"  # wrong code or unknown serial: deliberately one outcome
    LOCKED = "locked"  # too many wrong codes for this serial


@dataclass(frozen=True)
class BindFacts:
    """What the service found out, without deciding anything."""

    device_known: bool
    code_matches: bool
    owner_account_id: str | None
    recent_failures_for_serial: int


def decide_bind(facts: BindFacts, *, caller_account_id: str, lockout_threshold: int) -> BindOutcome:
    """Pure decision. The lockout is checked first and applies to unknown serials too: otherwise
    'locks after N tries' would itself reveal which serials exist."""
    if facts.recent_failures_for_serial >= lockout_threshold:
        return BindOutcome.LOCKED
    if not (facts.device_known and facts.code_matches):
        return BindOutcome.REJECTED
    if facts.owner_account_id is None:
        return BindOutcome.BOUND
    if facts.owner_account_id == caller_account_id:
        return BindOutcome.ALREADY_YOURS
    return BindOutcome.BOUND_ELSEWHERE

import pytest

from gateway.domain.binding import BindFacts, BindOutcome, decide_bind


def facts(**kw: object) -> BindFacts:
    base: dict[str, object] = {
        "device_known": True,
        "code_matches": True,
        "owner_account_id": None,
        "recent_failures_for_serial": 0,
    }
    base.update(kw)
    return BindFacts(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "outcome"),
    [
        (facts(), BindOutcome.BOUND),
        (facts(owner_account_id="me"), BindOutcome.ALREADY_YOURS),
        (facts(owner_account_id="other"), BindOutcome.BOUND_ELSEWHERE),
        (facts(code_matches=False), BindOutcome.REJECTED),
        (facts(device_known=False, code_matches=False), BindOutcome.REJECTED),
        (facts(device_known=False, code_matches=True), BindOutcome.REJECTED),
        (facts(recent_failures_for_serial=4), BindOutcome.BOUND),
        (facts(recent_failures_for_serial=5), BindOutcome.LOCKED),  # even with the right code
        (
            facts(device_known=False, recent_failures_for_serial=5),
            BindOutcome.LOCKED,
        ),  # unknown serials lock too
        (
            facts(owner_account_id="other", code_matches=False),
            BindOutcome.REJECTED,
        ),  # no owner hint without code
    ],
)
def test_bind_decision(given: BindFacts, outcome: BindOutcome) -> None:
    assert decide_bind(given, caller_account_id="me", lockout_threshold=5) is outcome

"""Lifecycle rules generated from retention classes (pure)."""

import pytest

from gateway.domain.plans import DEFAULT_CONFIG, Catalogue
from gateway.services.sweep import retention_classes
from storage import InvalidKey
from storage.lifecycle import MAX_RULES, lifecycle_rules, merge_rules


def test_one_rule_per_retention_class_plus_housekeeping() -> None:
    rules = lifecycle_rules([30, 7, 30, 60])
    assert [r["ID"] for r in rules] == [
        "camgate-retention-7d",
        "camgate-retention-30d",
        "camgate-retention-60d",
        "camgate-housekeeping",
    ]
    seven = rules[0]
    assert seven == {
        "ID": "camgate-retention-7d",
        "Status": "Enabled",
        "Filter": {"Tag": {"Key": "retention-days", "Value": "7"}},
        "Expiration": {"Days": 9},
        "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
    }
    housekeeping = rules[-1]
    assert housekeeping["Filter"] == {"Prefix": ""}
    assert housekeeping["Expiration"] == {"ExpiredObjectDeleteMarker": True}
    assert housekeeping["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert "Tag" not in str(housekeeping), "S3 refuses these actions in a tag-filtered rule"


def test_grace_is_added_to_each_class() -> None:
    assert lifecycle_rules([1], grace_days=0)[0]["Expiration"] == {"Days": 1}
    assert lifecycle_rules([1], grace_days=5)[0]["Expiration"] == {"Days": 6}
    with pytest.raises(ValueError):
        lifecycle_rules([1], grace_days=-1)


def test_the_catalogue_gives_the_classes() -> None:
    catalogue = Catalogue.from_config(DEFAULT_CONFIG)
    assert retention_classes(catalogue) == [3, 7, 30, 60]  # free 3, trial 7 (video 7), 7, 30, 60
    assert len(lifecycle_rules(retention_classes(catalogue))) == 5


def test_classes_must_be_whole_days_and_fit_in_a_bucket() -> None:
    with pytest.raises(InvalidKey):
        lifecycle_rules([0])
    assert len(lifecycle_rules(range(1, MAX_RULES))) == MAX_RULES
    with pytest.raises(ValueError):
        lifecycle_rules(range(1, MAX_RULES + 1))
    assert lifecycle_rules([]) == [lifecycle_rules([1])[-1]], "no class: housekeeping only"


def test_merge_keeps_other_rules_and_replaces_ours() -> None:
    theirs = {"ID": "ops-logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 9}}
    stale = lifecycle_rules([3, 90])
    merged = merge_rules([theirs, *stale], lifecycle_rules([3, 7]))
    assert [r["ID"] for r in merged] == [
        "ops-logs",
        "camgate-retention-3d",
        "camgate-retention-7d",
        "camgate-housekeeping",
    ]
    with pytest.raises(ValueError):
        merge_rules([{**theirs, "ID": f"ops-{i}"} for i in range(MAX_RULES)], lifecycle_rules([3]))

"""Bucket lifecycle rules: the backstop that expires media even if camgate's own sweep stops running.

Objects carry the tag ``retention-days=<n>`` (``storage.tags.retention_tags``), so one rule per retention
class covers every account (a bucket holds at most 1,000 rules: one per account would not fit):

- ``camgate-retention-<n>d``: objects tagged ``retention-days=<n>`` expire ``n + grace`` days after they
  were written (S3 runs lifecycle rules about once a day and late, hence the grace: the sweep, which
  knows each record's ``retain_until``, normally deletes them first); in a versioned bucket the version
  that expiry turns noncurrent goes a day later.
- ``camgate-housekeeping``: bucket-wide, expired delete markers are removed and multipart uploads left
  incomplete for a day are aborted (S3 allows neither action in a rule filtered on tags).

Pure: no I/O. ``S3Store.put_lifecycle`` installs what ``lifecycle_rules`` returns.
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from storage.tags import RETENTION_TAG, retention_tags

RULE_PREFIX = "camgate-"
MAX_RULES = 1000  # S3's limit per bucket
NONCURRENT_DAYS = 1
INCOMPLETE_UPLOAD_DAYS = 1


def rule_id(days: int) -> str:
    """The id of the rule for one retention class."""
    return f"{RULE_PREFIX}retention-{days}d"


def lifecycle_rules(retention_days: Iterable[int], grace_days: int = 2) -> list[dict[str, Any]]:
    """The lifecycle rules (boto3's ``Rules`` shape) for the given retention classes, shortest first."""
    if grace_days < 0:
        raise ValueError(f"grace_days must not be negative, not {grace_days}")
    classes = sorted(set(retention_days))
    if len(classes) + 1 > MAX_RULES:
        raise ValueError(f"{len(classes)} retention classes need more than S3's {MAX_RULES} lifecycle rules")
    rules: list[dict[str, Any]] = []
    for days in classes:
        tag = retention_tags(days)  # refuses classes under one day
        rules.append(
            {
                "ID": rule_id(days),
                "Status": "Enabled",
                "Filter": {"Tag": {"Key": RETENTION_TAG, "Value": tag[RETENTION_TAG]}},
                "Expiration": {"Days": days + grace_days},
                "NoncurrentVersionExpiration": {"NoncurrentDays": NONCURRENT_DAYS},
            }
        )
    rules.append(
        {
            "ID": f"{RULE_PREFIX}housekeeping",
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "Expiration": {"ExpiredObjectDeleteMarker": True},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": INCOMPLETE_UPLOAD_DAYS},
        }
    )
    return rules


def merge_rules(
    existing: Sequence[Mapping[str, Any]], ours: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The bucket's rules that are not camgate's, followed by ``ours``: installing never drops an
    operator's own rules, and rules of retention classes no longer in the catalogue go away."""
    kept = [dict(r) for r in existing if not str(r.get("ID", "")).startswith(RULE_PREFIX)]
    merged = kept + [dict(r) for r in ours]
    if len(merged) > MAX_RULES:
        raise ValueError(f"the bucket would hold {len(merged)} lifecycle rules; S3 allows {MAX_RULES}")
    return merged

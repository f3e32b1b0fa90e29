"""What a retention sweep and a reconciliation report: per account objects and bytes, totals, failures."""

from dataclasses import asdict, dataclass, field
from typing import Any

SAMPLE = 20  # keys listed in a report beside the counts


@dataclass
class Tally:
    """What went (or would go) for one account: objects, their bytes, and the records naming them.

    Bytes are those the records know: a snapshot's size (its thumbnail's is not recorded) and a clip's.
    """

    objects: int = 0
    bytes: int = 0
    records: int = 0


@dataclass
class SweepReport:
    """The outcome of one sweep (or, with ``dry_run``, what it would delete)."""

    dry_run: bool = False
    accounts: dict[str, Tally] = field(default_factory=dict)
    failed_records: int = 0  # expired records kept because an object of theirs could not be deleted
    failed_keys: list[str] = field(default_factory=list)  # a sample
    errors: list[str] = field(default_factory=list)  # whole requests that failed (a store down), a sample
    stopped: str | None = None  # why the sweep stopped before every expired record was handled
    elapsed_s: float = 0.0

    @property
    def objects(self) -> int:
        """Objects deleted (or that would be), all accounts."""
        return sum(t.objects for t in self.accounts.values())

    @property
    def bytes(self) -> int:
        """Bytes deleted (or that would be), all accounts."""
        return sum(t.bytes for t in self.accounts.values())

    @property
    def records(self) -> int:
        """Database records deleted (or that would be), all accounts."""
        return sum(t.records for t in self.accounts.values())

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return self.failed_records == 0 and not self.errors

    def add(self, account_id: str, objects: int, nbytes: int, records: int) -> None:
        """Counts what went for one account."""
        tally = self.accounts.setdefault(account_id, Tally())
        tally.objects += objects
        tally.bytes += nbytes
        tally.records += records

    def note_failure(self, keys: list[str], error: str | None = None) -> None:
        """Keeps a sample of the keys (and whole-request errors) that failed."""
        room = SAMPLE - len(self.failed_keys)
        if room > 0:
            self.failed_keys.extend(keys[:room])
        if error is not None and len(self.errors) < SAMPLE and error not in self.errors:
            self.errors.append(error)

    def summary(self) -> str:
        """One line for a log."""
        verb = "would delete" if self.dry_run else "deleted"
        line = (
            f"retention sweep {verb} {self.objects} objects ({format_bytes(self.bytes)}) and "
            f"{self.records} records of {len(self.accounts)} accounts in {self.elapsed_s:.1f} s"
        )
        if self.failed_records or self.errors:
            line += f"; {self.failed_records} records kept for a retry"
        if self.stopped:
            line += f"; stopped: {self.stopped}"
        return line

    def as_dict(self) -> dict[str, Any]:
        """The report as plain data (``--json``)."""
        return {
            "dry_run": self.dry_run,
            "objects": self.objects,
            "bytes": self.bytes,
            "records": self.records,
            "accounts": {a: asdict(t) for a, t in sorted(self.accounts.items())},
            "failed_records": self.failed_records,
            "failed_keys": self.failed_keys,
            "errors": self.errors,
            "stopped": self.stopped,
            "elapsed_s": round(self.elapsed_s, 3),
        }


@dataclass
class ReconcileReport:
    """The outcome of reconciling one region's store with the database (``dry_run``: what would change)."""

    region: str
    dry_run: bool = False
    busy: str | None = None  # another instance holds the region's reconciliation lease (its name)
    listed: int = 0  # objects listed under acct/
    orphans: int = 0  # objects no record names, older than the grace: deleted
    orphan_bytes: int = 0
    recent: int = 0  # objects no record names yet, younger than the grace: left alone for now
    unparseable: int = 0  # keys under acct/ outside the media layout: reported, left alone
    missing: int = 0  # records whose object is gone: removed
    stale: int = 0  # leftovers of unfinished writes (temp files, multipart uploads): removed
    failures: int = 0  # objects that could not be deleted (tried again next time)
    samples: dict[str, list[str]] = field(default_factory=dict)  # a few keys of each finding
    stopped: str | None = None
    elapsed_s: float = 0.0

    @property
    def changed(self) -> bool:
        """True when anything was (or would be) removed."""
        return bool(self.orphans or self.missing or self.stale)

    @property
    def ok(self) -> bool:
        """True when nothing failed and the pass ran to its end."""
        return self.failures == 0 and self.stopped is None

    def sample(self, finding: str, key: str) -> None:
        """Keeps a few keys of a finding."""
        keys = self.samples.setdefault(finding, [])
        if len(keys) < SAMPLE:
            keys.append(key)

    def summary(self) -> str:
        """One line for a log."""
        if self.busy:
            return f"reconcile {self.region}: skipped, {self.busy} is at it"
        verb = "would remove" if self.dry_run else "removed"
        line = (
            f"reconcile {self.region}: {self.listed} objects listed; {verb} {self.orphans} objects without "
            f"a record ({format_bytes(self.orphan_bytes)}), {self.missing} records without their object, "
            f"{self.stale} unfinished uploads; {self.recent} recent objects left for now, "
            f"{self.unparseable} keys outside the layout; {self.elapsed_s:.1f} s"
        )
        if self.failures:
            line += f"; {self.failures} objects could not be deleted"
        if self.stopped:
            line += f"; stopped: {self.stopped}"
        return line

    def as_dict(self) -> dict[str, Any]:
        """The report as plain data (``--json``)."""
        data = asdict(self)
        data["elapsed_s"] = round(self.elapsed_s, 3)
        return data


def format_bytes(n: int) -> str:
    """A byte count for people: 1023 B, 1.5 KiB, 20.0 MiB …"""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")

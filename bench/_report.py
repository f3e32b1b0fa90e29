"""The ingest bench's printed result: one Markdown table (figure, ceiling, ratio, target, met) and the
lines that explain it (load, backlog, where the CPU went)."""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench._ceilings import MqttCeiling, OpenCvCeiling, PutCeiling
from bench._measure import CpuUse, Saturation, Steady

# The targets.
TARGET_PUT_RATIO = 0.9
TARGET_CPU_RATIO = 1.3
TARGET_P99_COMMIT_MS = 50.0
DASH = "—"


@dataclass
class Ceilings:
    opencv: OpenCvCeiling
    mqtt: MqttCeiling | None = None
    put: PutCeiling | None = None


@dataclass
class StoreResult:
    store: str
    saturation: Saturation
    steady: Steady
    notes: list[str] = field(default_factory=list)


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _rows(r: StoreResult, c: Ceilings, cores: int) -> list[tuple[str, ...]]:
    s, h = r.saturation, r.steady
    snap_ms = c.opencv.snapshot_ms
    rows: list[tuple[str, ...]] = []
    if c.mqtt is not None:
        ceiling = f"MQTT pass-through {c.mqtt.rate:,.0f} msg/s"
        rows.append(
            ("max sustained alerts/s", f"{s.rate:.1f}", ceiling, f"{s.rate / c.mqtt.rate:.3f}", DASH, DASH)
        )
    ceiling = f"make_snapshot {c.opencv.per_core:,.0f}/s/core x {cores} cores"
    ratio = s.rate / (c.opencv.per_core * cores)
    rows.append(("max sustained alerts/s", f"{s.rate:.1f}", ceiling, f"{ratio:.3f}", DASH, DASH))
    if r.store == "s3" and c.put is not None:
        ceiling = f"raw PutObject {c.put.rate:,.0f}/s ({c.put.threads} threads)"
        for figure, value in (("alerts/s ÷ raw PUT/s", s.rate), ("object PUTs/s ÷ raw PUT/s", 2 * s.rate)):
            ratio = value / c.put.rate
            target = f"≥ {TARGET_PUT_RATIO}"
            rows.append(
                (figure, f"{value:.1f}", ceiling, f"{ratio:.2f}", target, _met(ratio >= TARGET_PUT_RATIO))
            )
    cpu_ms = h.cpu.per_alert_ms("gateway", h.committed)
    ceiling = f"make_snapshot {snap_ms:.2f} ms/image"
    rows.append(
        (
            "gateway CPU per alert (half rate, push included)",
            f"{cpu_ms:.2f} ms",
            ceiling,
            f"{cpu_ms / snap_ms:.2f}",
            f"≤ {TARGET_CPU_RATIO}",
            _met(cpu_ms / snap_ms <= TARGET_CPU_RATIO),
        )
    )
    cpu_ms = s.cpu.per_alert_ms("gateway", s.committed)
    rows.append(
        (
            "gateway CPU per alert (at max rate)",
            f"{cpu_ms:.2f} ms",
            ceiling,
            f"{cpu_ms / snap_ms:.2f}",
            DASH,
            DASH,
        )
    )
    p = h.commit_ms
    rows.append(
        (
            f"p99 publish→commit at {h.offered:.0f}/s",
            f"{p['p99']:.1f} ms",
            DASH,
            DASH,
            f"< {TARGET_P99_COMMIT_MS:.0f} ms",
            _met(p["p99"] < TARGET_P99_COMMIT_MS),
        )
    )
    rows.append(("publish→commit p50 / p95", f"{p['p50']:.1f} / {p['p95']:.1f} ms", DASH, DASH, DASH, DASH))
    w = h.webhook_ms
    rows.append(("publish→webhook p50 / p99", f"{w['p50']:.0f} / {w['p99']:.0f} ms", DASH, DASH, DASH, DASH))
    return [(r.store, *row) for row in rows]


def table(results: Sequence[StoreResult], c: Ceilings, cores: int) -> list[str]:
    """The results as a Markdown table."""
    rows = [row for r in results for row in _rows(r, c, cores)]
    header = ("store", "figure", "measured", "ceiling (same run)", "ratio", "target", "")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)) + " |"

    return [line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)]


def _split(cpu: CpuUse, alerts: int) -> str:
    """CPU per alert by process, in ms."""
    parts = [f"{name} {cpu.per_alert_ms(name, alerts):.2f}" for name in sorted(cpu.cores)]
    total = 1000 * cpu.ours * cpu.wall_s / alerts if alerts else math.nan
    return f"{', '.join(parts)}; all of these {total:.2f} ms"


def _cores(cpu: CpuUse) -> str:
    parts = ", ".join(f"{name} {v:.2f}" for name, v in sorted(cpu.cores.items()))
    return f"{parts}; machine {cpu.machine:.2f} busy, of which {cpu.others:.2f} outside the bench"


def details(results: Sequence[StoreResult], c: Ceilings, cores: int) -> list[str]:
    """What stands behind the table."""
    out = [
        f"OpenCV, one core: make_snapshot {c.opencv.snapshot_ms:.2f} ms, plain full imdecode "
        f"{c.opencv.full_decode_ms:.2f} ms per 720p JPEG"
    ]
    if c.mqtt is not None:
        out.append(
            f"MQTT pass-through: {c.mqtt.rate:,.0f} msg/s with the broker at {c.mqtt.broker_cpu:.2f} cores"
        )
    if c.put is not None:
        out.append(
            f"raw PutObject: {c.put.rate:,.0f}/s from {c.put.threads} threads; per PUT the S3 server used "
            f"{c.put.server_cpu_ms:.2f} ms of CPU and boto3 {c.put.client_cpu_ms:.2f} ms"
        )
    for r in results:
        s, h = r.saturation, r.steady
        budget = 1000 * s.cpu.ours * s.cpu.wall_s / s.committed if s.committed else math.nan
        out += [
            f"[{r.store}] max rate: {s.committed} alerts committed in {s.window_s:.1f} s (offered "
            f"{s.offered_rate:.1f}/s), {s.min_backlog}-{s.max_backlog} alerts waiting for the gateway",
            f"[{r.store}]   cores used: {_cores(s.cpu)}",
            f"[{r.store}]   CPU ms per alert: {_split(s.cpu, s.committed)} "
            f"(so {cores} idle cores would allow about {1000 * cores / budget:.0f} alerts/s)",
            f"[{r.store}] half rate: asked {h.offered:.1f}/s, published {h.achieved:.1f}/s, "
            f"{h.committed}/{h.sent} committed, {h.pushed} pushed; settled {h.settled_s:.2f} s after the "
            "last publish",
            f"[{r.store}]   cores used: {_cores(h.cpu)}",
            f"[{r.store}]   CPU ms per alert: {_split(h.cpu, h.committed)}",
        ]
        out.extend(f"[{r.store}] note: {n}" for n in r.notes)
    return out

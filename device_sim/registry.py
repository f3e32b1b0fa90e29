"""A simulated factory: serials, label codes and broker secrets from a CSPRNG, and printable labels."""

import csv
import html
import secrets
from dataclasses import dataclass
from pathlib import Path

import segno

from gateway.domain.credentials import new_label_code
from gateway.domain.registry import COLUMNS

SERIAL_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


@dataclass(frozen=True)
class SimDevice:
    serial: str
    code: str
    model: str
    broker_secret: str


def new_fleet(count: int, *, model: str = "CG-Sim-720", prefix: str = "CG") -> list[SimDevice]:
    """``count`` devices with unique random serials (prefix + 10 characters)."""
    serials: set[str] = set()
    while len(serials) < count:
        serials.add(prefix + "".join(secrets.choice(SERIAL_ALPHABET) for _ in range(10)))
    return [SimDevice(s, new_label_code(), model, secrets.token_urlsafe(24)) for s in sorted(serials)]


def write_registry(devices: list[SimDevice], path: Path) -> None:
    """The factory registry CSV that ``camgate registry import`` reads (it holds secrets: mode 600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for d in devices:
            writer.writerow([d.serial, d.code, d.model, d.broker_secret])


def read_registry(path: Path) -> list[SimDevice]:
    """Reads a registry CSV back (the simulator needs each camera's broker secret)."""
    with path.open(newline="") as handle:
        return [
            SimDevice(r["serial"], r["verification_code"], r["model"], r["broker_secret"])
            for r in csv.DictReader(handle)
        ]


def write_labels(devices: list[SimDevice], path: Path) -> None:
    """Printable labels (HTML, A4, 3 columns): model, serial, code, and a QR code of 'serial:code'."""
    cells = []
    for d in devices:
        qr = segno.make(f"{d.serial}:{d.code}", error="m").svg_inline(scale=3)
        cells.append(
            f'<div class="label"><div class="qr">{qr}</div><div><b>{html.escape(d.model)}</b><br>'
            f"S/N <code>{d.serial}</code><br>Verification code <code>{d.code}</code></div></div>"
        )
    page = (
        "<!doctype html><meta charset=utf-8><title>camgate labels</title><style>"
        "@page{size:A4;margin:10mm}body{font:11px sans-serif;display:grid;"
        "grid-template-columns:repeat(3,1fr);gap:4mm}.label{border:1px dashed #999;padding:3mm;display:flex;"
        "gap:3mm;align-items:center;break-inside:avoid}code{font-size:13px}</style>" + "".join(cells)
    )
    path.write_text(page)

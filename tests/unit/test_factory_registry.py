"""The simulated factory: unique serials and codes from a CSPRNG, a CSV the importer reads, printable labels."""

import stat
from pathlib import Path

from device_sim.registry import new_fleet, read_registry, write_labels, write_registry
from gateway.domain.registry import validate_row


def test_fleet_is_unique_and_valid(tmp_path: Path) -> None:
    fleet = new_fleet(500)
    assert len({d.serial for d in fleet}) == 500
    assert len({d.code for d in fleet}) > 490
    path = tmp_path / "registry.csv"
    write_registry(fleet, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600, "the factory file holds secrets"
    assert read_registry(path) == fleet
    for d in fleet[:50]:
        row = validate_row(
            {
                "serial": d.serial,
                "verification_code": d.code,
                "model": d.model,
                "broker_secret": d.broker_secret,
            }
        )
        assert row.serial == d.serial


def test_labels_show_serial_code_and_a_qr_code(tmp_path: Path) -> None:
    fleet = new_fleet(3, model="CG <Dome>")
    labels = tmp_path / "labels.html"
    write_labels(fleet, labels)
    page = labels.read_text()
    assert page.count("<svg") == 3 and "CG &lt;Dome&gt;" in page
    for d in fleet:
        assert d.serial in page and d.code in page

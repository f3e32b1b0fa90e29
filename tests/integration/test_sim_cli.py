"""``python -m device_sim run`` as an operator runs it: against the project's broker, from a registry
file, with progress, a summary, per-alert records in load mode, and a clean stop on Ctrl-C."""

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from device_sim.registry import new_fleet, write_registry
from gateway.wire import StatusHeader, decode
from tests.support.mosquitto import MosquittoBroker

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def registry(mosquitto_broker: MosquittoBroker, tmp_path: Path) -> Path:
    devices = new_fleet(8)
    mosquitto_broker.add_devices({d.serial: d.broker_secret for d in devices})
    path = tmp_path / "registry.csv"
    write_registry(devices, path)
    return path


def _run(broker: MosquittoBroker, registry: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "device_sim",
        "run",
        "--registry",
        str(registry),
        "--port",
        str(broker.port),
    ]
    return subprocess.run(
        [*command, *extra], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def test_run_for_a_while_with_progress_and_a_summary(
    mosquitto_broker: MosquittoBroker, registry: Path
) -> None:
    done = _run(
        mosquitto_broker, registry, "--count", "5", "--duration", "3", "--mean-gap", "1", "--cooldown", "1"
    )
    assert done.returncode == 0, done.stderr
    assert "connected 5/5" in done.stdout
    assert "summary: 5 cameras, 5 connects (0 refused, 0 lost)" in done.stdout


def test_load_mode_reports_the_rate_and_writes_records(
    mosquitto_broker: MosquittoBroker, registry: Path, tmp_path: Path
) -> None:
    records = tmp_path / "load.csv"
    done = _run(
        mosquitto_broker,
        registry,
        "--load",
        "40",
        "--duration",
        "2",
        "--records",
        str(records),
        "--mqtt",
        "5",
    )
    assert done.returncode == 0, done.stderr
    assert "load: target 40/s, achieved" in done.stdout
    with records.open() as handle:
        rows = list(csv.DictReader(handle))
    assert 68 <= len(rows) <= 80
    assert all(row["acked_at"] for row in rows)
    assert float(rows[0]["published_at"]) <= float(rows[0]["acked_at"])


def test_ctrl_c_stops_cleanly_with_an_offline_status_per_camera(
    mosquitto_broker: MosquittoBroker, registry: Path
) -> None:
    gateway = mosquitto_broker.gateway_client()
    assert gateway.connect().value == 0
    gateway.subscribe("cam/+/status")
    command = [
        sys.executable,
        "-m",
        "device_sim",
        "run",
        "--registry",
        str(registry),
        "--port",
        str(mosquitto_broker.port),
    ]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        online = [decode(gateway.next_message(timeout=15).payload)[0] for _ in range(8)]
        assert all(isinstance(h, StatusHeader) and h.online and h.firmware == "sim-1.0.0" for h in online)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "summary: 8 cameras" in out
    offline = [decode(gateway.next_message().payload)[0] for _ in range(8)]
    assert all(isinstance(h, StatusHeader) and not h.online for h in offline)
    time.sleep(0.2)
    assert gateway.drain() == []

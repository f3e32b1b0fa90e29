"""``camgate registry import`` as an operator runs it: a real process, a real CSV, both databases."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from device_sim.registry import new_fleet, write_registry
from gateway.adapters.db.engine import create_engine
from gateway.adapters.db.tables import devices
from gateway.domain.credentials import broker_secret_matches, label_code_matches

PEPPER = "p" * 40


def camgate(*args: str, database_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CAMGATE_DATABASE__URL": database_url,
        "CAMGATE_SECURITY__SECRET_KEY": PEPPER,
        "CAMGATE_LOG_LEVEL": "WARNING",
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_import_validates_rejects_duplicates_and_stores_only_hashes(
    database_url: str, tmp_path: Path
) -> None:
    fleet = new_fleet(25)
    registry = tmp_path / "registry.csv"
    write_registry(fleet, registry)
    with registry.open("a") as f:
        f.write(f"{fleet[0].serial},ABCDEF,CG-Sim-720,{'x' * 20}\n")  # duplicate of line 2
        f.write("CG-BAD,ABCDEF,CG-Sim-720,xxxxxxxxxxxxxxxxxxxx\n")  # invalid serial
        f.write("CGGOOD000001,ABC,CG-Sim-720,xxxxxxxxxxxxxxxxxxxx\n")  # short code

    first = camgate("registry", "import", str(registry), database_url=database_url, cwd=tmp_path)
    assert first.returncode == 1, first.stderr
    assert "read 28 rows: imported 25, rejected 3" in first.stderr
    assert "duplicate serial (first on line 2)" in first.stderr
    assert "verification_code" in first.stderr and "serial: 8 to 32" in first.stderr

    async def stored() -> list[dict[str, object]]:
        engine = create_engine(database_url)
        async with engine.connect() as conn:
            rows = [dict(r) for r in (await conn.execute(select(devices))).mappings()]
        await engine.dispose()
        return rows

    rows = {str(r["serial"]): r for r in asyncio.run(stored())}
    assert len(rows) == 25
    for cam in fleet:
        row = rows[cam.serial]
        assert cam.code not in repr(row) and cam.broker_secret not in repr(row)
        assert label_code_matches(PEPPER.encode(), cam.serial, cam.code, str(row["code_hash"]))
        assert broker_secret_matches(cam.broker_secret, str(row["broker_secret_hash"]))
    if database_url.startswith("sqlite"):
        raw = Path(database_url.split("///", 1)[1]).read_bytes()
        assert fleet[3].code.encode() not in raw and fleet[3].broker_secret.encode() not in raw

    again = camgate("registry", "import", str(registry), database_url=database_url, cwd=tmp_path)
    assert again.returncode == 1
    assert "imported 0, rejected 28" in again.stderr and "serial already registered" in again.stderr


def test_dry_run_stores_nothing(database_url: str, tmp_path: Path) -> None:
    registry = tmp_path / "registry.csv"
    write_registry(new_fleet(3), registry)
    result = camgate(
        "registry", "import", "--dry-run", str(registry), database_url=database_url, cwd=tmp_path
    )
    assert result.returncode == 0 and "would import 3" in result.stderr
    result = camgate("registry", "import", str(registry), database_url=database_url, cwd=tmp_path)
    assert result.returncode == 0 and "imported 3, rejected 0" in result.stderr


def test_bad_header_and_help(database_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("serial,code\nCG12345678,ABCDEF\n")
    result = camgate("registry", "import", str(bad), database_url=database_url, cwd=tmp_path)
    assert result.returncode == 1 and "lacks verification_code, model, broker_secret" in result.stderr
    for args in (["--help"], ["registry", "import", "--help"], ["device", "show", "--help"]):
        assert camgate(*args, database_url=database_url, cwd=tmp_path).returncode == 0


def test_bad_configuration_fails_readably(database_url: str, tmp_path: Path) -> None:
    config = tmp_path / "camgate.toml"
    config.write_text("[http]\nport = 'eighty'\n")
    result = camgate("--config", str(config), "db", "upgrade", database_url=database_url, cwd=tmp_path)
    assert result.returncode == 2
    assert "http.port" in result.stderr and "Traceback" not in result.stderr

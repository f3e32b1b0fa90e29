"""``python -m bench.sweep`` runs end to end on a small set (its figures are printed, never asserted)."""

import subprocess
import sys
from pathlib import Path


def test_the_sweep_bench_runs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.sweep", "--objects", "2000", "--batch-size", "300"],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "seeded 2 x 2,000 objects (800 events x 2, 400 clips)" in out
    assert "camgate sweep: 2,000 keys in" in out
    assert "| sweep keys/s |" in out and "raw DeleteObjects" in out
    assert "sweep: 1,200 records, 2,000 objects, 76,800 bytes of 50 accounts" in out
    assert "WRONG" not in out

"""The README's run command (``camgate demo``) as a person runs it: it starts, its demo account logs in and
sees its cameras, the broker and database are ready, the camera on the trial records clips that expire
and are swept, and Ctrl-C stops it cleanly."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.gateway_proc import free_port
from tests.support.mosquitto import find_mosquitto


def request(
    url: str, body: dict[str, str] | None = None, token: str | None = None
) -> tuple[int, dict[str, object]]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 - a local URL
    with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
        return resp.status, json.loads(resp.read())


def swept_clips(base: str) -> float:
    """How many clips the demo's in-service sweep has deleted, from its /metrics."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:  # noqa: S310 - a local URL
        text = resp.read().decode()
    found = re.search(r'^camgate_swept_objects_total\{table="clips"\} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_demo_starts_serves_and_stops(tmp_path: Path) -> None:
    assert find_mosquitto(), "the demo needs mosquitto (scripts/bootstrap installs it)"
    port = free_port()
    env = {**os.environ, "CAMGATE_HTTP__PORT": str(port), "COLUMNS": "200"}
    proc = subprocess.Popen(
        # 10-second plan days: the trial lasts 140 s, its clips are kept 70 s.
        [sys.executable, "-m", "gateway", "demo", "--day-seconds", "10"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                status, ready = request(f"{base}/readyz")
                if status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "demo not ready in 60 s"
            time.sleep(0.2)
        checks = ready["checks"]
        assert set(checks.values()) == {"ok"} and {"database", "broker"} <= set(checks), checks
        assert any(name.startswith("store:") for name in checks), checks
        _, session = request(
            f"{base}/v1/sessions", {"identifier": "demo@camgate.local", "password": "camgate demo password"}
        )
        token = str(session["token"])
        _, devices = request(f"{base}/v1/devices", token=token)
        assert len(devices["items"]) == 3  # type: ignore[arg-type]
        assert (tmp_path / "var" / "fleet" / "labels.html").exists()

        # Alerts of the trial camera come every ~20 s; each clip is swept 70 s after capture.
        seen_clip = False
        deadline = time.monotonic() + 240
        while not (seen_clip and swept_clips(base) > 0):
            assert time.monotonic() < deadline, f"clips seen: {seen_clip}, swept: {swept_clips(base)}"
            seen_clip = seen_clip or bool(request(f"{base}/v1/clips", token=token)[1]["items"])
            time.sleep(1)
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == 0, out
    assert "camgate is running at" in out and "Traceback" not in out
    assert "is on the trial plan until" in out

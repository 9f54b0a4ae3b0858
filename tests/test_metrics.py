"""Prometheus exposition: the text format, the loopback server, and a real daemon scraped."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from edge_ml.localbroker import LocalBroker, free_port
from edge_ml.metrics import CONTENT_TYPE, MetricsServer, exposition

SAMPLE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? -?[0-9.e+-]+$")


def _parse(text: str) -> dict[str, float]:
    """Samples of a Prometheus text document, checking every line's shape."""
    samples = {}
    typed = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("# HELP "):
            continue
        assert SAMPLE.match(line), line
        name, value = line.rsplit(" ", 1)
        assert name.split("{")[0] in typed, f"{name} has no TYPE line"
        samples[name] = float(value)
    return samples


def test_exposition_format() -> None:
    health = {"version": 'x"1', "uptime_s": 12.5, "connected": False, "readings_total": 10,
              "queue_depth": 0, "storage_error": None, "last_checkpoint_at": None,
              "readings_per_s": float("nan")}
    samples = _parse(exposition(health))
    assert samples == {'edge_ml_info{version="x\\"1"}': 1, "edge_ml_uptime_seconds": 12.5,
                       "edge_ml_mqtt_connected": 0, "edge_ml_readings_total": 10,
                       "edge_ml_queue_depth": 0}


def test_counters_end_in_total() -> None:
    text = exposition({"readings_total": 1, "rejects_total": 2, "dropped_total": 3,
                       "storage_faults": 4})
    for line in text.splitlines():
        if line.startswith("# TYPE") and line.endswith("counter"):
            assert line.split()[2].endswith("_total"), line


def test_server_binds_loopback_only_and_serves() -> None:
    server = MetricsServer(0, lambda: {"version": "1", "streams": 3}).start()
    try:
        assert server._server is not None
        assert server._server.server_address[0] == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
            assert r.headers["Content-Type"] == CONTENT_TYPE
            assert _parse(r.read().decode())["edge_ml_streams"] == 3
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/nope", timeout=5)
        assert err.value.code == 404
    finally:
        server.stop()


def test_a_failing_health_source_gives_500_not_a_dead_server() -> None:
    def broken() -> dict[str, object]:
        raise RuntimeError("boom")

    server = MetricsServer(0, broken).start()
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5)
        assert err.value.code == 500
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_daemon_metrics_endpoint(broker: LocalBroker, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "edge-ml.toml"
    config.write_text(
        f'[mqtt]\nport = {broker.port}\n[storage]\ndb = "{tmp_path / "state.db"}"\n'
        f"[daemon]\nmetrics_port = {port}\nhealth_interval_s = 0.5\n"
    )
    log = tmp_path / "daemon.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_ml", "run", "--config", str(config)],
            stdout=sink, stderr=subprocess.STDOUT)
    try:
        samples: dict[str, float] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and samples.get("edge_ml_mqtt_connected") != 1:
            time.sleep(0.2)
            if proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    samples = _parse(r.read().decode())
            except OSError:
                continue
        assert samples.get("edge_ml_mqtt_connected") == 1, (samples, log.read_text())
        for name in ("edge_ml_readings_total", "edge_ml_queue_depth", "edge_ml_dropped_total",
                     "edge_ml_rejects_total", "edge_ml_streams", "edge_ml_open_alerts",
                     "edge_ml_uptime_seconds", "edge_ml_readings_per_second"):
            assert name in samples, name
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

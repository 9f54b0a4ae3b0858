"""The fleet simulator: determinism, truth well-formed and non-overlapping, anomalies visible."""

from __future__ import annotations

import itertools
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from fb_helpers import Subscriber, wait_for

from edge_ml.localbroker import LocalBroker
from firmware_bridge.frame import decode_frame
from firmware_bridge.simulator import ANOMALY_KINDS, SIGNALS, Fleet

DEMO = {"sensors": 8, "rate": 20, "seconds": 30, "anomaly_after": 12, "day_seconds": 60}


def test_same_seed_same_run_and_different_seed_different_run() -> None:
    a = Fleet(seed=7, **DEMO)
    b = Fleet(seed=7, **DEMO)
    c = Fleet(seed=8, **DEMO)
    assert a.truth == b.truth
    assert list(a.readings(100.0)) == list(b.readings(100.0))
    assert a.truth != c.truth


@pytest.mark.parametrize("seed", range(10))
def test_truth_is_placed_after_warmup_and_never_overlaps(seed: int) -> None:
    fleet = Fleet(seed=seed, **DEMO)
    assert len(fleet.truth) == 8
    streams = set(fleet.streams)
    by_stream: dict[str, list[tuple[float, float]]] = {}
    for anomaly in fleet.truth:
        assert anomaly.stream in streams
        assert anomaly.kind in ANOMALY_KINDS
        assert 12 <= anomaly.start < anomaly.end <= 30
        by_stream.setdefault(anomaly.stream, []).append((anomaly.start, anomaly.end))
    for windows in by_stream.values():
        windows.sort()
        assert all(e1 <= s2 for (_, e1), (s2, _) in itertools.pairwise(windows))


def test_every_kind_appears_and_nodes_carry_one_to_three_fields() -> None:
    fleet = Fleet(seed=1, sensors=20, rate=5, seconds=120, anomalies=25)
    assert {a.kind for a in fleet.truth} == set(ANOMALY_KINDS)
    assert all(1 <= len(node.streams) <= 3 for node in fleet.nodes)
    assert {s.rsplit("/", 1)[1] for s in fleet.streams} <= set(SIGNALS)


@pytest.mark.parametrize("seed", range(6))
def test_anomalies_stand_out_from_normal_noise(seed: int) -> None:
    fleet = Fleet(seed=seed, **DEMO)
    # The same seed without anomalies is the exact counterfactual: the noise draws are shared.
    clean = Fleet(seed=seed, **{**DEMO, "anomalies": 0})
    assert clean.truth == []
    noise = {s.name: s.noise for node in fleet.nodes for s in node.streams.values()}
    series: dict[str, list[tuple[float, float, float]]] = {}
    for r, c in zip(fleet.readings(0.0), clean.readings(0.0), strict=True):
        series.setdefault(r.stream, []).append((r.ts, r.value, r.value - c.value))
    for anomaly in fleet.truth:
        sigma = noise[anomaly.stream]
        inside = [(v, d) for t, v, d in series[anomaly.stream] if anomaly.start <= t < anomaly.end]
        assert inside, anomaly
        if anomaly.kind == "stuck":
            assert len({v for v, _ in inside}) == 1
        elif anomaly.kind == "noise_burst":
            assert statistics.pstdev(d for _, d in inside) > 3 * sigma, anomaly
        else:  # spike, level shift, drift: some sample at least 4 sigma off
            assert max(abs(d) for _, d in inside) > 4 * sigma, anomaly
    for stream, points in series.items():  # and nothing changes outside the truth windows
        windows = [(a.start, a.end) for a in fleet.truth if a.stream == stream]
        assert all(d == 0 for t, _, d in points if not any(s <= t < e for s, e in windows))


def test_truth_rows_are_epoch_windows() -> None:
    fleet = Fleet(seed=2, **DEMO)
    rows = fleet.truth_rows(1_700_000_000.0)
    assert [set(r) for r in rows] == [{"stream", "start", "end", "kind"}] * len(rows)
    assert all(1_700_000_012 <= r["start"] < r["end"] <= 1_700_000_030 for r in rows)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fmt", ["frame", "json"])
def test_simulate_command_publishes_everything(
    fmt: str, broker: LocalBroker, tmp_path: Path
) -> None:
    sub = Subscriber(broker, ["sensors/#"])
    truth = tmp_path / "truth.jsonl"
    try:
        result = subprocess.run(
            [sys.executable, "-m", "firmware_bridge", "simulate", "--mqtt-host", broker.host,
             "--mqtt-port", str(broker.port), "--sensors", "3", "--rate", "20", "--seconds", "2",
             "--anomaly-after", "0.5", "--anomalies", "3", "--day-seconds", "10", "--seed", "4",
             "--truth", str(truth), "--format", fmt],
            capture_output=True, text=True, timeout=30,
        )
        assert result.returncode == 0, result.stderr
        assert "sent 120 messages" in result.stdout
        got = wait_for(lambda: len(p := sub.drain()) >= 120 and p, 10, "all messages")
    finally:
        sub.close()
    rows = [json.loads(line) for line in truth.read_text().splitlines()]
    assert len(rows) == 3 and all(set(r) == {"stream", "start", "end", "kind"} for r in rows)
    assert {t for t, _, _ in got} == {"sensors/node-1", "sensors/node-2", "sensors/node-3"}
    first = got[0][1]
    if fmt == "frame":
        frame = decode_frame(first)
        assert frame.dev == "node-1" and frame.seq == 0
        fields = set(frame.m)
    else:
        payload = json.loads(first)
        fields = set(payload) - {"ts"}
    streams = {f"sensors/node-1/{f}" for f in fields}
    fleet = Fleet(sensors=3, rate=20, seconds=2, seed=4, anomaly_after=0.5, anomalies=3,
                  day_seconds=10)
    assert streams == {s for s in fleet.streams if s.startswith("sensors/node-1/")}
    assert {r["stream"] for r in rows} <= set(fleet.streams)


def test_cli_exit_codes(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "firmware_bridge"]
    usage = subprocess.run([*run, "simulate", "--sensors", "0", "--truth", "x"],
                           capture_output=True, text=True)
    assert usage.returncode == 2
    missing = subprocess.run([*run, "serial"], capture_output=True, text=True)
    assert missing.returncode == 2 and "--port" in missing.stderr
    bad_file = subprocess.run(
        [*run, "serial", "--port", str(tmp_path / "nope"), "--password-file",
         str(tmp_path / "missing")], capture_output=True, text=True)
    assert bad_file.returncode == 2
    helped = subprocess.run([*run, "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "serial" in helped.stdout and "simulate" in helped.stdout

"""``edge-ml demo``, the README's main job, as a user runs it: a real subprocess that starts its own
broker, daemon and simulated fleet."""

from __future__ import annotations

import re
import subprocess
import sys


def demo(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_ml", "demo", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_a_short_demo_finds_injected_anomalies_and_cleans_up() -> None:
    run = demo("--seconds", "15", "--rate", "40", "--sensors", "4")
    assert run.returncode == 0, run.stdout + run.stderr
    found = re.search(r"Found (\d+) of (\d+) injected anomalies; (\d+) false alarm", run.stdout)
    assert found, run.stdout
    hits, injected, false_alarms = map(int, found.groups())
    assert injected >= 1 and hits >= 1, run.stdout
    assert false_alarms <= 3, run.stdout
    assert "kept" not in run.stdout  # a clean run leaves no temporary folder behind


def test_a_demo_too_short_to_score_anything_is_refused_before_it_starts() -> None:
    # At 20 Hz the 150-reading warm-up takes 7.5 s; anomalies start at 40 % of the run.
    run = demo("--seconds", "10", timeout=60)
    assert run.returncode == 1
    assert "--seconds 10 is too short" in run.stderr
    assert "use --seconds 24 or more" in run.stderr
    assert "broker" not in run.stdout  # refused before anything was started

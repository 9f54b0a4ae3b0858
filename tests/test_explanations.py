"""Alerts that explain themselves (issue 14): which view raised them, which fields, what was usual.

The real daemon against a real mosquitto: every alert names its view, fields and expected range
on MQTT, in SQLite, in ``edge-ml alerts`` and in Home Assistant's state (the attributes).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from daemon_helpers import DaemonProcess, Observer, wait_for

from edge_ml.alerts import AlertTracker, explain
from edge_ml.config import AlertsConfig, parse_config
from edge_ml.homeassistant import ATTRIBUTES_TEMPLATE, HomeAssistant, StreamState
from edge_ml.kernels.calibration import QUIET_Z_DIVISOR, tail_level
from edge_ml.kernels.explain import (
    EXPECTED_Z,
    MODEL,
    SEASONAL,
    SHIFT,
    STUCK,
    expected_range,
    level_view,
)
from edge_ml.localbroker import LocalBroker
from edge_ml.pipeline import Pipeline

SPIKE = "sensors/rig/spike"
STUCK_STREAM = "sensors/rig/stuck"


def _alerts_cli(db: Path, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "edge_ml", "alerts", "--db", str(db), *args],
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout


def _open_alert(observer: Observer, stream: str) -> dict | None:
    opened = [a for a in observer.json_under(f"edge-ml/alerts/{stream}") if a["state"] == "open"]
    return opened[0] if opened else None


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_every_alert_names_its_view_fields_and_expected_range(
    broker: LocalBroker, daemon_env: tuple[Path, Path], tmp_path: Path
) -> None:
    config, db = daemon_env
    config.write_text(config.read_text().replace("[alerts]\n", "[alerts]\nhomeassistant = true\n"))
    observer = Observer(broker, ["edge-ml/#", "homeassistant/#"])
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        wait_for(lambda: b"online" in observer.on("edge-ml/status")
                 or daemon.proc.poll() is not None, 120, "the daemon to come online")
        assert daemon.proc.poll() is None, daemon.log()
        rng = np.random.default_rng(3)
        for _ in range(300):
            observer.client.publish(SPIKE, f"{rng.normal(20.0, 0.5):.4f}", qos=1)
            observer.client.publish(STUCK_STREAM, f"{rng.normal(50.0, 2.0):.4f}", qos=1)
        # A spike as the spike stream's last reading: its alert opens and stays open.
        observer.publish(SPIKE, "35.0")
        # The stuck stream repeats one value until its alert opens, then says nothing more.
        for _ in range(200):
            if _open_alert(observer, STUCK_STREAM):
                break
            for _ in range(3):
                observer.client.publish(STUCK_STREAM, "50.1234", qos=1)
            time.sleep(0.2)
        spike = wait_for(lambda: _open_alert(observer, SPIKE), 60, "the spike's alert")
        stuck = wait_for(lambda: _open_alert(observer, STUCK_STREAM), 30, "the stuck alert")

        # MQTT: the view, the stream itself as the one field, and its usual range.
        assert spike["view"] == "seasonal"
        assert spike["fields"] == {SPIKE: 1.0}
        low, high = spike["expected"]
        assert 17.0 < low < 20.0 < high < 23.0  # around the readings' 20 +- 0.5
        assert not low <= spike["value"] <= high
        assert stuck["view"] == "stuck"
        assert stuck["fields"] == {STUCK_STREAM: 1.0}
        low, high = stuck["expected"]
        assert 40.0 < low < 50.0 < high < 60.0
        assert low <= stuck["value"] <= high  # a stuck value can sit inside the usual range

        # SQLite: the same, in the alerts table's own columns.
        def stored() -> dict[str, tuple]:
            with sqlite3.connect(db) as conn:
                rows = conn.execute(
                    "SELECT stream, view, fields, expected_low, expected_high FROM alerts "
                    "WHERE state = 'open'").fetchall()
            return {r[0]: r[1:] for r in rows}

        rows = wait_for(lambda: len(stored()) == 2 and stored(), 30, "both alerts stored")
        assert rows[SPIKE] == ("seasonal", json.dumps({SPIKE: 1.0}), *spike["expected"])
        assert rows[STUCK_STREAM] == ("stuck", json.dumps({STUCK_STREAM: 1.0}),
                                      *stuck["expected"])

        # `edge-ml alerts`: one line per alert, with its view and expected range.
        lines = _alerts_cli(db).splitlines()
        assert lines[0].split()[6] == "stream" and lines[0].endswith("  why")
        assert len(lines) == 3
        by_stream = {line.split()[5]: line for line in lines[1:]}
        lo, hi = spike["expected"]
        assert by_stream[SPIKE].endswith(f"  seasonal expected {lo:.4g}..{hi:.4g}")
        lo, hi = stuck["expected"]
        assert by_stream[STUCK_STREAM].endswith(f"  stuck expected {lo:.4g}..{hi:.4g}")
        as_json = [json.loads(line) for line in _alerts_cli(db, "--json").splitlines()]
        assert {r["stream"]: r["fields"] for r in as_json} == {
            SPIKE: {SPIKE: 1.0}, STUCK_STREAM: {STUCK_STREAM: 1.0}}  # an object, not text

        # Home Assistant: the binary sensor's attributes come from the state topic.
        def ha_state(stream: str) -> dict | None:
            states = [json.loads(p) for p in observer.on(f"edge-ml/streams/{stream}/state") if p]
            return states[-1] if states and states[-1]["open"] else None

        state = wait_for(lambda: ha_state(STUCK_STREAM), 30, "the stuck stream's HA state")
        assert (state["view"], state["fields"], state["expected"]) == (
            "stuck", {STUCK_STREAM: 1.0}, stuck["expected"])
        state = wait_for(lambda: ha_state(SPIKE), 30, "the spike stream's HA state")
        assert state["view"] == "seasonal" and state["expected"] == spike["expected"]
        configs = [json.loads(p) for t, p, _ in observer.messages
                   if t.startswith("homeassistant/binary_sensor/") and p]
        assert configs and all(c["json_attributes_topic"] == c["state_topic"] for c in configs)
    finally:
        code = daemon.stop()
        observer.close()
    assert code == 0, daemon.log()


# -- the kernel hook, against the calibration it explains ------------------------------------

def test_level_view_names_the_largest_tail() -> None:
    def reference(level: float, z_season: float, shift: bool, z_vol: float, run: float) -> int:
        if level <= tail_level(z_season):
            return SHIFT if shift else SEASONAL
        if level <= run or level <= tail_level(min(z_vol, 0.0) / QUIET_Z_DIVISOR):
            return STUCK
        return MODEL

    rng = np.random.default_rng(0)
    for _ in range(500):
        z_season, z_vol = rng.normal(0, 4, 2)
        likelihood, run = rng.uniform(0, 1, 2) * [1.0, rng.random() < 0.3]
        shift = bool(rng.random() < 0.5)
        level = max(tail_level(z_season), tail_level(min(z_vol, 0.0) / QUIET_Z_DIVISOR),
                    likelihood, run)
        assert level_view(level, tail_level(z_season), shift, z_vol, run) == reference(
            level, z_season, shift, z_vol, run)
    assert level_view(0.9, tail_level(0.1), False, 0.0, 0.0) == MODEL  # no stream-level tail
    assert level_view(tail_level(8.0), tail_level(8.0), False, -30.0, 0.0) == SEASONAL
    assert level_view(tail_level(8.0), tail_level(8.0), True, -30.0, 0.0) == SHIFT
    assert level_view(tail_level(-30.0 / QUIET_Z_DIVISOR), tail_level(0.5), True, -30.0,
                      0.0) == STUCK
    assert level_view(0.8, tail_level(0.5), False, 0.0, 0.8) == STUCK  # a rare run


def test_a_level_shift_is_explained_as_a_shift_and_a_spike_as_seasonal() -> None:
    """A step of 2.5 deviations: each reading alone is ordinary (inside its usual range), their
    run is not, and the persistent view raises the alert: its view is ``shift``. A spike of 12
    deviations is one reading far off: ``seasonal``."""
    rng = np.random.default_rng(3)
    n = 6000
    ts = 1_700_000_000.0 + 300.0 * np.arange(n)
    values = 20.0 + 2.0 * np.sin(2 * np.pi * ts / 86400.0) + rng.normal(0.0, 1.0, n)
    values[3000] += 12.0
    values[4500:] += 2.5
    pipeline = Pipeline(parse_config({}))
    out = pipeline.process_readings(["sensors/t"] * n, ts, values)
    opens = {int(np.searchsorted(ts, e.ts)): e for e in out.events if e.state == "open"}
    assert opens[3000].view == "seasonal"
    after = sorted(i for i in opens if i >= 4500)
    assert after and after[0] < 4560
    shift = opens[after[0]]
    assert shift.view == "shift"
    assert shift.expected is not None and shift.expected[0] <= shift.value <= shift.expected[1]


def test_expected_range_is_the_profile_plus_minus_its_deviation() -> None:
    out = np.empty(2)
    # value 26, profile 20 (residual 6) scaled by a deviation of 2 (z = 3)
    expected_range(26.0, 6.0, 3.0, out)
    assert out.tolist() == [20.0 - EXPECTED_Z * 2.0, 20.0 + EXPECTED_Z * 2.0]
    expected_range(26.0, 0.0, 0.0, out)  # a slot too young to have a deviation
    assert np.isnan(out).all()


def test_a_resolve_repeats_why_its_alert_opened() -> None:
    tracker = AlertTracker(AlertsConfig(debounce=1, cooldown_s=0, cooldown_readings=0))
    slots = np.zeros(3, dtype=np.int64)
    levels = np.array([0.1, 0.9, 0.1])
    view = np.array([STUCK, SEASONAL, MODEL], dtype=np.int8)
    expected = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    _, _, events = tracker.evaluate(slots, levels, np.ones(3), np.arange(3.0),
                                    np.zeros(3, np.uint8), ["s"], view, expected)
    assert [(e.state, e.view, e.fields, e.expected) for e in events] == [
        ("open", "seasonal", {"s": 1.0}, (3.0, 4.0)),
        ("resolved", "seasonal", {"s": 1.0}, (3.0, 4.0))]
    assert explain(MODEL, "s", np.array([np.nan, 1.0])) == ("model", {"s": 1.0}, None)


def test_home_assistant_attributes_template_reads_the_state_payload() -> None:
    state = StreamState("s/a", 0.9, True, False, 35.0, 1.0, ("seasonal", {"s/a": 1.0},
                                                             (18.0, 22.0)))
    body = json.loads(state.payload())
    assert (body["view"], body["fields"], body["expected"]) == ("seasonal", {"s/a": 1.0},
                                                                [18.0, 22.0])
    ha = HomeAssistant(object(), "edge-ml", "homeassistant", "gw")  # type: ignore[arg-type]
    config = ha.binary_sensor_config("s/a")
    assert config["json_attributes_topic"] == ha.state_topic("s/a")
    assert config["json_attributes_template"] == ATTRIBUTES_TEMPLATE
    for key in ("view", "fields", "expected"):
        assert f"value_json.{key}" in ATTRIBUTES_TEMPLATE


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_broken_relationship_raises_a_joint_alert_that_names_its_fields(
    broker: LocalBroker, daemon_env: tuple[Path, Path], tmp_path: Path
) -> None:
    """A pump's current, flow and pressure in one JSON map are a device: a fault that keeps
    each inside its own range but breaks their relationship alerts on ``<device>/joint``."""
    config, db = daemon_env
    observer = Observer(broker, ["edge-ml/#"])
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    device = "sensors/pump1"
    try:
        wait_for(lambda: b"online" in observer.on("edge-ml/status")
                 or daemon.proc.poll() is not None, 120, "the daemon to come online")
        assert daemon.proc.poll() is None, daemon.log()
        rng = np.random.default_rng(4)
        for i in range(400):
            load = 0.5 + 0.3 * np.sin(i / 20) + rng.normal(0, 0.05)
            fields = {"current": 2 + 6 * load + rng.normal(0, 0.15),
                      "flow": 10 * load + rng.normal(0, 0.2),
                      "pressure": 1 + 3 * load + rng.normal(0, 0.1)}
            if i == 399:  # clogged: current of a high load, flow of a low one, both usual
                fields = {"current": 2 + 6 * 0.65, "flow": 10 * 0.35, "pressure": 1 + 3 * 0.5}
            observer.client.publish(device, json.dumps(fields), qos=1)
        alert = wait_for(lambda: _open_alert(observer, f"{device}/joint"), 60, "a joint alert")
        assert alert["view"] == "joint"
        assert set(alert["fields"]) <= {f"{device}/current", f"{device}/flow",
                                        f"{device}/pressure"}
        assert len(alert["fields"]) >= 2 and abs(sum(alert["fields"].values()) - 1) < 0.2
        worst = next(iter(alert["fields"]))
        low, high = alert["expected"]
        assert low < high and not low <= alert["value"] <= high  # the worst field's value
        with sqlite3.connect(db) as conn:
            row = wait_for(lambda: conn.execute(
                "SELECT view, fields, expected_low FROM alerts WHERE stream = ?",
                [f"{device}/joint"]).fetchone(), 30, "the joint alert stored")
        assert row == ("joint", json.dumps(alert["fields"]), low)
        line = next(line for line in _alerts_cli(db).splitlines() if f"{device}/joint" in line)
        assert f"joint expected {low:.4g}..{high:.4g} fields {worst}=" in line
    finally:
        code = daemon.stop()
        observer.close()
    assert code == 0, daemon.log()

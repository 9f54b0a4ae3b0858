"""``edge-ml demo``: a private broker, a simulated fleet with injected anomalies, the real
daemon as a subprocess, and a side-by-side of the alerts it raised and the anomalies injected."""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edge_ml.config import load_config
from edge_ml.devices import JOINT_SUFFIX
from edge_ml.errors import EdgeMLError
from edge_ml.localbroker import LocalBroker
from edge_ml.replay import replay_tree
from edge_ml.report import (
    INSTALL_HINT,
    ReportDependencyError,
    build_report,
    load_stream,
    require_plotly,
    write_report,
)
from edge_ml.status import status_document
from edge_ml.storage import Storage
from edge_ml.timestamps import parse_timestamp
from firmware_bridge.simulator import Fleet

# An alert counts for an injected anomaly when it opens on the same stream between slightly
# before the anomaly starts (readings are timestamped at the sensor) and this long after it ends
# (debounce plus the feature window need a few readings to react).
MATCH_BEFORE_S = 1.0
MATCH_AFTER_S = 5.0
#: Where the report of the run goes by default: the work folder is deleted after a clean run.
DEFAULT_REPORT = "edge-ml-demo-report.html"
# Readings each demo stream learns from before it is scored (the demo config's warmup).
DEMO_WARMUP = 150
# Anomalies are injected from this share of the run on; the warm-up must be over by then,
# with WARM_MARGIN_S to spare.
ANOMALY_START = 0.4
WARM_MARGIN_S = 2.0

DEMO_CONFIG = """\
[mqtt]
port = {port}
client_id = "edge-ml-demo"

[storage]
db = "{db}"
flush_interval_s = 0.5
# Counts and health in the database every second (the daemon's default is 10 minutes).
stats_interval_s = 1.0

[model]
# A short first window so the demo fleet is scored within a few seconds.
window_size = 100
warmup = {warmup}

[alerts]
cooldown_readings = 100

[daemon]
health_interval_s = 1.0
"""


def _wait(predicate: Callable[[], bool], timeout: float, what: str,
          proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise EdgeMLError(f"{what}: the daemon exited with {proc.returncode}")
        time.sleep(0.2)
    raise EdgeMLError(f"timed out after {timeout:.0f}s waiting for {what}")


def _health(db: Path) -> dict[str, Any]:
    if not db.exists():
        return {}
    storage = Storage(db)
    try:
        return storage.health()
    finally:
        storage.close()


def match_alerts(
    truth: list[dict[str, Any]], alerts: list[dict[str, Any]]
) -> tuple[list[tuple[dict[str, Any], dict[str, Any] | None]], list[dict[str, Any]]]:
    """Pair each injected anomaly with the first alert that opened for it; the rest are false.

    A node's ``<node>/joint`` stream (its fields' joint level) alerting on an anomaly injected
    into one of its fields has seen that anomaly too: such an alert is neither the pair nor a
    false alarm. Nor is a second alert of the anomaly's own stream while the anomaly lasts (a
    drift longer than the alert cooldown can open one again): it has an injected anomaly.
    """
    opened = sorted((a for a in alerts if a["state"] == "open"), key=lambda a: a["opened_at"])
    used: set[str] = set()
    pairs = []

    def during(alert: dict[str, Any], anomaly: dict[str, Any]) -> bool:
        return (anomaly["start"] - MATCH_BEFORE_S <= alert["opened_at"]
                <= anomaly["end"] + MATCH_AFTER_S)

    for anomaly in sorted(truth, key=lambda t: t["start"]):
        found = next(
            (a for a in opened if a["alert_id"] not in used and a["stream"] == anomaly["stream"]
             and during(a, anomaly)),
            None,
        )
        if found:
            used.add(found["alert_id"])
        pairs.append((anomaly, found))
        joint = anomaly["stream"].rsplit("/", 1)[0] + JOINT_SUFFIX
        used.update(a["alert_id"] for a in opened if a["stream"] == joint and during(a, anomaly))
        if found:
            used.update(a["alert_id"] for a in opened
                        if a["stream"] == anomaly["stream"] and during(a, anomaly))
    return pairs, [a for a in opened if a["alert_id"] not in used]


def _s(seconds: float) -> float:
    """Seconds to one decimal, with no negative zero: -0.04 s prints as 0.0, not -0.0."""
    return round(seconds, 1) + 0.0


def format_report(pairs: list[tuple[dict[str, Any], dict[str, Any] | None]],
                  false_alarms: list[dict[str, Any]], t0: float) -> str:
    lines = ["", "Injected anomalies and the alerts raised for them:",
             f"  {'stream':<34} {'kind':<12} {'at (s)':>7} {'for (s)':>8}   alert"]
    for anomaly, alert in pairs:
        found = (f"opened after {_s(alert['opened_at'] - anomaly['start']):+.1f} s, "
                 f"score {alert['score']:.4f}, {alert['severity']}"
                 + (f", view {alert['view']}" if alert.get("view") else "")) if alert else "MISSED"
        lines.append(
            f"  {anomaly['stream']:<34} {anomaly['kind']:<12} {_s(anomaly['start'] - t0):>7.1f} "
            f"{_s(anomaly['end'] - anomaly['start']):>8.1f}   {found}"
        )
    lines.append("")
    if false_alarms:
        lines.append("Alerts with no injected anomaly (false alarms):")
        for alert in false_alarms:
            lines.append(f"  {alert['stream']:<34} at {_s(alert['opened_at'] - t0):>6.1f} s, "
                         f"score {alert['score']:.4f}")
    else:
        lines.append("No false alarms.")
    found = sum(1 for _, a in pairs if a)
    lines.append("")
    lines.append(f"Found {found} of {len(pairs)} injected anomalies; "
                 f"{len(false_alarms)} false alarm(s).")
    return "\n".join(lines)


def check_duration(seconds: float, rate: float) -> None:
    """Refuse a run too short to show anything: anomalies must start after the warm-up.

    Raises
    ------
    EdgeMLError
        Naming the shortest ``--seconds`` that works at this ``--rate``.
    """
    if rate <= 0 or seconds <= 0:
        raise EdgeMLError("--seconds and --rate must be positive")
    warm_s = DEMO_WARMUP / rate
    if ANOMALY_START * seconds < warm_s + WARM_MARGIN_S:
        shortest = (warm_s + WARM_MARGIN_S) / ANOMALY_START
        raise EdgeMLError(
            f"--seconds {seconds:g} is too short at --rate {rate:g}: each stream warms up for "
            f"{DEMO_WARMUP} readings ({warm_s:g} s) and anomalies start at "
            f"{ANOMALY_START:.0%} of the run, so none could be scored; use --seconds "
            f"{math.ceil(shortest)} or more (or a higher --rate)"
        )


def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def write_readings(fleet: Fleet, start_ts: float, folder: Path) -> list[str]:
    """The fleet's readings as ``<stream>.csv`` (``timestamp,value``) under ``folder``; the
    streams' names.

    The daemon keeps no per-reading levels, so the report replays the same readings instead:
    the seeded simulator gives them again, stamped as the run stamped them.
    """
    files: dict[str, Any] = {}
    try:
        for reading in fleet.readings(start_ts):
            handle = files.get(reading.stream)
            if handle is None:
                path = folder / f"{reading.stream}.csv"
                path.parent.mkdir(parents=True, exist_ok=True)
                handle = files[reading.stream] = path.open("w", encoding="utf-8")
                handle.write("timestamp,value\n")
            handle.write(f"{_stamp(reading.ts)},{reading.value!r}\n")
    finally:
        for handle in files.values():
            handle.close()
    return sorted(files)


def replay_readings(fleet: Fleet, start_ts: float, config: Path, work: Path) -> list[str]:
    """The fleet's readings, stamped from ``start_ts``, written under ``work / "readings"`` and
    replayed through ``config`` into ``work / "results"``; the streams' names."""
    streams = write_readings(fleet, start_ts, work / "readings")
    replay_tree(load_config(config), work / "readings", work / "results")
    return streams


def replayed_alerts(results: Path, streams: list[str]) -> list[dict[str, Any]]:
    """Every alert that opened in a replay's result files, as the daemon's alert rows (the
    fields :func:`match_alerts` reads)."""
    alerts = []
    for stream in streams:
        result = load_stream(results / f"{stream}.csv")
        for row in np.flatnonzero(result.opened):
            alerts.append({"alert_id": f"{stream}:{len(alerts)}", "stream": stream,
                           "state": "open",
                           "opened_at": parse_timestamp(result.timestamps[row]),
                           "score": float(result.scores[row])})
    return alerts


def replay_fleet(fleet: Fleet, start_ts: float, work: Path) -> tuple[
        list[tuple[dict[str, Any], dict[str, Any] | None]], list[dict[str, Any]], int]:
    """The fleet's readings, stamped from ``start_ts``, replayed through the demo's configuration
    in ``work``: ``(pairs, false_alarms, readings)`` as :func:`match_alerts` pairs them.

    The live demo's result moves with the wall clock (where its half-hour profile slots begin);
    this one is the same at every call.
    """
    work.mkdir(parents=True, exist_ok=True)
    config = work / "edge-ml.toml"
    config.write_text(DEMO_CONFIG.format(port=1883, db=work / "unused.db", warmup=DEMO_WARMUP))
    streams = replay_readings(fleet, start_ts, config, work)
    pairs, false_alarms = match_alerts(fleet.truth_rows(start_ts),
                                       replayed_alerts(work / "results", streams))
    return pairs, false_alarms, fleet.ticks_total * len(streams)


def truth_windows(truth: list[dict[str, Any]], streams: list[str]) -> dict[str, list[list[str]]]:
    """NAB-style label windows (whole seconds, as NAB labels are cut) keyed by result file."""
    windows: dict[str, list[list[str]]] = {f"{s}.csv": [] for s in streams}
    for anomaly in truth:
        windows.setdefault(f"{anomaly['stream']}.csv", []).append(
            [_stamp(anomaly["start"])[:19], _stamp(anomaly["end"])[:19]])
    return windows


def replay_run(*, work: Path, config: Path, truth: list[dict[str, Any]], seconds: float,
               sensors: int, rate: float, seed: int, t0: float) -> list[str]:
    """Replay the run's readings (the seeded fleet again, stamped as the run stamped them)
    through the run's configuration into ``work / "results"``; the streams replayed."""
    # The demo's own fleet, built as `firmware-bridge simulate` built it.
    fleet = Fleet(sensors=sensors, rate=rate, seconds=seconds, seed=seed,
                  anomaly_after=ANOMALY_START * seconds)
    # The truth file holds absolute times, the fleet relative ones: their gap is the run's start.
    start_ts = truth[0]["start"] - fleet.truth[0].start if truth and fleet.truth else t0
    return replay_readings(fleet, start_ts, config, work)


# How near a replayed alert must be to the daemon's to be the same one: a replay file keeps
# timestamps to the microsecond and levels to 6 decimals, the daemon the floats themselves
# (two live runs: within 5e-7 s and 5e-7).
SAME_OPENING_S = 1e-3
SAME_LEVEL = 1e-5


def replay_agreement(alerts: list[dict[str, Any]], replayed: list[dict[str, Any]]) -> str:
    """One line: whether the daemon opened the alerts the replay opened, on the same streams at
    the same readings with the same levels (each field's stream; a node's joint stream is the
    daemon's alone), or what differs."""
    daemon = [a for a in alerts
              if a["state"] == "open" and not a["stream"].endswith(JOINT_SUFFIX)]

    def same(one: dict[str, Any], other: dict[str, Any]) -> bool:
        return (one["stream"] == other["stream"]
                and abs(one["opened_at"] - other["opened_at"]) <= SAME_OPENING_S
                and abs(one["score"] - other["score"]) <= SAME_LEVEL)

    def named(side: str, alert: dict[str, Any]) -> str:
        return (f"{side} only {alert['stream']} at {alert['opened_at']:.3f}, "
                f"level {alert['score']:.4f}")

    only = [named("daemon", a) for a in daemon if not any(same(a, r) for r in replayed)]
    only += [named("replay", r) for r in replayed if not any(same(r, a) for a in daemon)]
    if not only:
        alerts_word = "alert" if len(daemon) == 1 else "alerts"
        return (f"replay     the same readings replayed open the daemon's {len(daemon)} "
                f"{alerts_word} (its fields'), at the same readings with the same levels")
    return "replay     differs from the daemon: " + "; ".join(only)


def write_demo_report(*, work: Path, config: Path, truth: list[dict[str, Any]],
                      streams: list[str], report: Path,
                      out: Callable[[str], Any]) -> Path | None:
    """Write the HTML report of the run's replay (:func:`replay_run`'s results in ``work``).

    Returns the report's path, or None (with a line saying how to get it) without plotly.
    """
    try:
        require_plotly()
    except ReportDependencyError:
        out(f"report     not written: it needs plotly ({INSTALL_HINT})")
        return None
    labels = work / "labels.json"
    labels.write_text(json.dumps(truth_windows(truth, streams), indent=1))
    written = write_report(build_report(work / "results", load_config(config), labels), report)
    out(f"report     {written.resolve()} (the same readings replayed through the same "
        "pipeline; open it in a browser)")
    return written


def run_demo(*, seconds: float = 30.0, sensors: int = 8, rate: float = 20.0, seed: int = 7,
             workdir: Path | None = None, report: Path | None = None,
             out: Callable[[str], Any] = print) -> bool:
    """Run the whole demo; True when the daemon ran and stopped cleanly.

    A temporary working folder is removed after a clean run and kept (and named) otherwise, so
    the daemon log is there to read. The HTML report of the run goes to ``report`` (default
    :data:`DEFAULT_REPORT` in the current folder).
    """
    check_duration(seconds, rate)
    ok = False
    own_dir = workdir is None
    work = Path(workdir or tempfile.mkdtemp(prefix="edge-ml-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / "edge-ml.db"
    truth_path = work / "truth.jsonl"
    for stale in (db, truth_path):
        stale.unlink(missing_ok=True)
    broker = LocalBroker(workdir=work / "broker")
    daemon: subprocess.Popen[bytes] | None = None
    try:
        broker.start()
        out(f"broker     mosquitto on 127.0.0.1:{broker.port} (private, stops with the demo)")
        config = work / "edge-ml.toml"
        config.write_text(DEMO_CONFIG.format(port=broker.port, db=db, warmup=DEMO_WARMUP))
        with (work / "daemon.log").open("wb") as log:  # the daemon keeps its own copy
            daemon = subprocess.Popen(
                [sys.executable, "-m", "edge_ml", "run", "--config", str(config)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        # A temporary folder goes at a clean end: its log is named then only if it is kept.
        log_note = "" if own_dir else f", log {work / 'daemon.log'}"
        out(f"daemon     pid {daemon.pid}{log_note} (first start compiles the Numba kernels "
            "into the cache)")
        _wait(lambda: _health(db).get("connected") is True, 180, "the daemon to connect",
              daemon)
        out(f"fleet      {sensors} nodes x {rate:g} Hz for {seconds:g} s, anomalies after "
            f"{ANOMALY_START * seconds:g} s")
        t0 = time.time()
        simulate = subprocess.run(
            [sys.executable, "-m", "firmware_bridge", "simulate",
             "--mqtt-port", str(broker.port), "--sensors", str(sensors), "--rate", str(rate),
             "--seconds", str(seconds), "--seed", str(seed), "--truth", str(truth_path),
             "--anomaly-after", str(ANOMALY_START * seconds)],
            capture_output=True, text=True, timeout=seconds + 120,
        )
        if simulate.returncode != 0:
            raise EdgeMLError(f"simulator failed: {simulate.stderr.strip()[-500:]}")
        sent = simulate.stdout.strip().splitlines()[-1] if simulate.stdout else "done"
        if own_dir:  # the truth file goes with the folder: its name only
            sent = sent.replace(str(truth_path), truth_path.name)
        out(f"fleet      {sent}")
        # Let the daemon finish the queue, then stop it the way systemd would.
        previous = -1

        def settled() -> bool:
            nonlocal previous
            health = _health(db)  # one read: both values from the same health write
            total = int(health.get("readings_total") or 0)
            done = total == previous and health.get("queue_depth") == 0
            previous = total
            return done

        _wait(settled, 60, "the daemon to drain", daemon)
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=60)
        out(f"daemon     stopped with exit code {code}")
        truth = [json.loads(line) for line in truth_path.read_text().splitlines() if line]
        storage = Storage(db)
        try:
            alerts = storage.alerts(limit=None)
            status = status_document(storage)
        finally:
            storage.close()
        out(f"readings   {status['readings_total']} scored on {len(status['streams'])} streams, "
            f"{status['rejects_total']} rejected")
        pairs, false_alarms = match_alerts(truth, alerts)
        out(format_report(pairs, false_alarms, t0))
        out("")
        # The daemon keeps no per-reading levels: the report replays the same readings, and
        # says first whether that replay opens the alerts the daemon opened.
        streams = replay_run(work=work, config=config, truth=truth, seconds=seconds,
                             sensors=sensors, rate=rate, seed=seed, t0=t0)
        out(replay_agreement(alerts, replayed_alerts(work / "results", streams)))
        write_demo_report(work=work, config=config, truth=truth, streams=streams,
                          report=Path(report or DEFAULT_REPORT), out=out)
        ok = code == 0
        return ok
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        broker.close()
        if own_dir and ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            out(f"\nkept       {work} (database, truth file, daemon log)")

"""Multi-sensor machines through ``edge-ml replay``: relationship faults, per-field anomalies,
and river's Shuttle as one 9-field device (issue 14).

Machines: pumps reporting current, flow, pressure and vibration every 5 minutes for 21 days.
One hidden load follows a daily cycle (busy days, quiet nights) with noise; every field is a
linear function of the load plus its own noise, so all four move together. Injected after the
first 4 days (the learning period):

- relationship faults (30 minutes each): one field takes the value it would have at another
  load (at least 0.3 away from the true one, drawn from the loads of the same time of day on
  other days) while the others follow the true load. Every faulty value is inside that
  field's own usual range for that time of day: no single field is out of the ordinary;
- single-field anomalies on other rows: a spike of 8 deviations (5 minutes) or a stuck value
  (2 hours).

Windows are at least ``GAP_ROWS`` apart: more than the alert cooldown (150 readings), inside
which a stream by design raises no second alert.

Each machine is one CSV ``timestamp,current,flow,pressure,vibration``, replayed with the
shipped defaults by ``edge-ml replay`` (the product pipeline: per-field views plus the file's
device); the same data as four single-column files gives what the per-field views alone find.
A fault is found when an alert opens on a row inside it or within 3 rows after; a false alert
is one that opens anywhere else.

Shuttle: its 49,097 rows as one CSV of nine value columns (one row a second), replayed by
``edge-ml replay``; exact ROC-AUC of the rows' ``device_score`` (the device's own ranking
score, written by replay for a file of several columns) and, for comparison, of their
``anomaly_score`` (the row's alerting level: the highest of its views, saturating); and the
share of rows with ``alert_open`` (label 1 = not class 1 "Rad Flow", as river's loader gives
it). Long faults on a pump rig: ``long_faults.py`` beside this one.

    .venv/bin/python benchmarks/multisensor.py [--machines 20] [--seed 1] [--no-shuttle]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
STEP_S = 300
ROWS_PER_DAY = 86400 // STEP_S
FIELDS = ("current", "flow", "pressure", "vibration")
# field = intercept + slope * load + noise
MODEL = {"current": (2.0, 6.0, 0.15), "flow": (0.0, 10.0, 0.2),
         "pressure": (1.0, 3.0, 0.08), "vibration": (0.5, 1.5, 0.05)}
LEARN_DAYS = 4
FAULT_ROWS = 6  # 30 minutes
SPIKE_ROWS = 1
STUCK_ROWS = 24  # 2 hours
TOLERANCE_ROWS = 3
# Rows between injected windows at least: more than [alerts] cooldown_readings (150), which by
# design holds a stream's alerts for that long after one opens (one incident, one alert).
GAP_ROWS = 170


def machine(rng: np.random.Generator, days: int, n_faults: int, n_single: int):
    """Values ``[rows, 4]`` and the injected windows ``[(kind, start, end)]``."""
    n = days * ROWS_PER_DAY
    t = np.arange(n)
    phase = rng.uniform(0, 2 * np.pi)
    daily = 0.5 + 0.3 * np.sin(2 * np.pi * t / ROWS_PER_DAY + phase)
    load = np.clip(daily + rng.normal(0, 0.06, n), 0.05, 1.0)
    values = np.column_stack([MODEL[f][0] + MODEL[f][1] * load + rng.normal(0, MODEL[f][2], n)
                              for f in FIELDS])
    windows: list[tuple[str, int, int]] = []
    # One window per segment of the scoring period, at a random place inside it, at least
    # GAP_ROWS from the next: separate incidents, each after the alert cooldown of the last.
    segments = n_faults + n_single
    first = LEARN_DAYS * ROWS_PER_DAY
    width = (n - first) // segments
    assert width >= GAP_ROWS + STUCK_ROWS + 20, "too many windows for the days"
    slots = iter(rng.permutation(segments).tolist())

    def place(length: int) -> int:
        k = next(slots)
        return first + k * width + int(rng.integers(0, width - GAP_ROWS - length))

    for _ in range(n_faults):
        start = place(FAULT_ROWS)
        j = int(rng.integers(len(FIELDS)))
        a, b, sd = MODEL[FIELDS[j]]
        for r in range(start, start + FAULT_ROWS):
            # the loads this time of day has on other days: the field's usual range here
            same_time = load[r % ROWS_PER_DAY::ROWS_PER_DAY]
            lo, hi = np.quantile(same_time, [0.02, 0.98])
            candidates = same_time[(same_time >= lo) & (same_time <= hi)
                                   & (np.abs(same_time - load[r]) >= 0.3)]
            if candidates.size == 0:  # a narrow hour: the far end of its own range
                candidates = np.array([lo if load[r] - lo > hi - load[r] else hi])
            values[r, j] = a + b * float(rng.choice(candidates)) + rng.normal(0, sd)
        windows.append(("relationship", start, start + FAULT_ROWS))
    for i in range(n_single):
        j = int(rng.integers(len(FIELDS)))
        sd = MODEL[FIELDS[j]][2] + MODEL[FIELDS[j]][1] * 0.06
        if i % 2 == 0:
            start = place(SPIKE_ROWS)
            values[start, j] += 8 * sd * rng.choice([-1, 1])
            windows.append(("spike", start, start + SPIKE_ROWS))
        else:
            start = place(STUCK_ROWS)
            values[start:start + STUCK_ROWS, j] = values[start, j]
            windows.append(("stuck", start, start + STUCK_ROWS))
    return values, windows


def write_csv(path: Path, columns: list[str], values: np.ndarray, start: int = 1_700_000_000,
              step: float = STEP_S) -> None:
    with path.open("w", newline="") as handle:
        handle.write("timestamp," + ",".join(columns) + "\n")
        for i, row in enumerate(values.tolist()):
            handle.write(f"{start + i * step:g}," + ",".join(f"{v:.5g}" for v in row) + "\n")


def replay(folder: Path, out: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "edge_ml", "replay", str(folder), "--out", str(out)],
                   check=True, capture_output=True, text=True, cwd=ROOT, timeout=3600)
    return time.perf_counter() - started


def read_out(path: Path) -> dict[str, np.ndarray]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    out = {"alert": np.array([r["alert"] == "1" for r in rows]),
           "open": np.array([r["alert_open"] == "1" for r in rows]),
           "score": np.array([float(r["anomaly_score"]) for r in rows]),
           "why": np.array([r["explanation"] for r in rows])}
    if rows and "device_score" in rows[0]:
        out["device_score"] = np.array([float(r["device_score"]) for r in rows])
    return out


def score_windows(alert: np.ndarray, windows: list[tuple[str, int, int]]):
    """Per window whether an alert opened in it (+ tolerance), and the alerts outside all."""
    inside = np.zeros(len(alert), dtype=bool)
    found = []
    for _, start, end in windows:
        span = slice(start, min(end + TOLERANCE_ROWS, len(alert)))
        inside[span] = True
        found.append(bool(alert[span].any()))
    return found, int((alert & ~inside).sum())


def multisensor(machines: int, seed: int, days: int, work: Path) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    multi, single = work / "multi", work / "single"
    multi.mkdir()
    single.mkdir()
    truth = {}
    for m in range(machines):
        values, windows = machine(rng, days, n_faults=5, n_single=4)
        name = f"pump{m:02d}"
        truth[name] = windows
        write_csv(multi / f"{name}.csv", list(FIELDS), values)
        for j, field in enumerate(FIELDS):
            write_csv(single / f"{name}_{field}.csv", ["value"], values[:, j:j + 1])
    seconds = replay(multi, work / "multi_out") + replay(single, work / "single_out")
    counts = {"faults": 0, "faults_found": 0, "faults_found_per_field": 0,
              "faults_found_joint_view": 0, "single": 0, "single_found": 0,
              "false_alerts": 0, "false_alerts_per_field": 0, "rows": 0}
    for name, windows in truth.items():
        out = read_out(work / "multi_out" / f"{name}.csv")
        alert = out["alert"].copy()
        alert[:LEARN_DAYS * ROWS_PER_DAY] = False  # the learning period is not scored
        found, false = score_windows(alert, windows)
        per_field = np.zeros(len(alert), dtype=bool)
        for field in FIELDS:
            per_field |= read_out(work / "single_out" / f"{name}_{field}.csv")["alert"]
        per_field[:LEARN_DAYS * ROWS_PER_DAY] = False
        found_pf, false_pf = score_windows(per_field, windows)
        counts["rows"] += len(alert) - LEARN_DAYS * ROWS_PER_DAY
        counts["false_alerts"] += false
        counts["false_alerts_per_field"] += false_pf
        for (kind, start, end), hit, hit_pf in zip(windows, found, found_pf, strict=True):
            if kind == "relationship":
                counts["faults"] += 1
                counts["faults_found"] += hit
                counts["faults_found_per_field"] += hit_pf
                span = slice(start, end + TOLERANCE_ROWS)
                counts["faults_found_joint_view"] += bool(
                    (out["alert"][span] & np.char.startswith(out["why"][span], "joint")).any())
            else:
                counts["single"] += 1
                counts["single_found"] += hit
    readings = counts["rows"] * len(FIELDS)
    return {**counts, "readings": readings, "replay_s": seconds,
            "false_per_10k_readings": 1e4 * counts["false_alerts"] / readings,
            "false_per_10k_rows": 1e4 * counts["false_alerts"] / counts["rows"],
            "false_per_10k_readings_per_field": 1e4 * counts["false_alerts_per_field"] / readings}


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Exact ROC-AUC with ties counted half (Mann-Whitney U)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    pos = labels == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def shuttle(work: Path) -> dict[str, float]:
    from river import datasets

    rows, labels = [], []
    for x, y in datasets.Shuttle():
        rows.append([float(v) for v in x.values()])
        labels.append(int(y))
    folder = work / "shuttle"
    folder.mkdir()
    write_csv(folder / "shuttle.csv", [f"f{i + 1}" for i in range(9)], np.array(rows), step=1)
    seconds = replay(folder, work / "shuttle_out")
    out = read_out(work / "shuttle_out" / "shuttle.csv")
    labels_a = np.array(labels)
    joint_share = float(np.mean(np.char.startswith(out["why"], "joint")))
    return {"rows": len(rows), "roc_auc": roc_auc(out["device_score"], labels_a),
            "roc_auc_level": roc_auc(out["score"], labels_a),
            "open_normal": float(out["open"][labels_a == 0].mean()),
            "open_anomalies": float(out["open"][labels_a == 1].mean()),
            "replay_s": seconds, "rows_explained_by_joint": joint_share}


def machines_report(args: argparse.Namespace, work: Path) -> None:
    r = multisensor(args.machines, args.seed, args.days, work)
    print(f"machines: {args.machines} x {args.days} days, {r['readings']:,} readings scored "
          f"(after {LEARN_DAYS} learning days), replay {r['replay_s']:.1f} s")
    print(f"relationship faults found: {r['faults_found']}/{r['faults']} "
          f"({100 * r['faults_found'] / r['faults']:.0f}%; joint view's alert: "
          f"{r['faults_found_joint_view']}); per-field views alone: "
          f"{r['faults_found_per_field']}/{r['faults']}")
    print(f"single-field anomalies found: {r['single_found']}/{r['single']}")
    print(f"false alerts: {r['false_alerts']} = {r['false_per_10k_readings']:.2f} per 10k "
          f"readings ({r['false_per_10k_rows']:.2f} per 10k rows); per-field views alone: "
          f"{r['false_alerts_per_field']} = {r['false_per_10k_readings_per_field']:.2f} "
          "per 10k readings")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=20)
    parser.add_argument("--days", type=int, default=21)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-shuttle", action="store_true")
    parser.add_argument("--no-machines", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.no_machines:
            machines_report(args, work)
        if not args.no_shuttle:
            s = shuttle(work)
            print(f"shuttle: {s['rows']:,} rows through edge-ml replay as one 9-field device: "
                  f"ROC-AUC of device_score {s['roc_auc']:.4f}; of anomaly_score (the row's "
                  f"level) {s['roc_auc_level']:.4f} (rows whose level is the joint view's: "
                  f"{100 * s['rows_explained_by_joint']:.0f}%); alert_open on "
                  f"{100 * s['open_normal']:.1f}% of normal rows, "
                  f"{100 * s['open_anomalies']:.1f}% of anomalies; replay {s['replay_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""NAB alert-decision scores on held-out-like labelled streams: the issue's held-out kinds, made.

The held-out streams (counts every 5 minutes, hourly metrics of ~1,500 readings, road-traffic
sensors) are scored by NAB's standard profile on the pipeline's own alerts. The calibration
suite counts false alerts and finds, which NAB weighs its own way: a false alert costs 0.11 of a
window, a window found late earns less than one found early. This script makes NAB-style files
from the suite's held-out-like kinds (``calibration_suite.KINDS``): each file gets 1-3 anomalies
of the suite's five types (``calibration_suite.inject``, sized by the stream's own noise), one
in each equal part of its scored span, and NAB's windows (10 % of the file's length shared among
its anomalies, centred on each anomaly's first reading). The files are replayed with shipped
defaults and scored by the same code as ``nab_groups.py``.

These are our generators, not the held-out data: a change chosen on this score is tuned on
invented streams. It says how NAB's weights read the suite's false alerts and finds, for
example whether a setting's fewer false alerts are worth the windows it loses.

Usage: python benchmarks/heldout_like.py [--files-per-kind 4] [--config FILE] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from calibration_suite import ANOMALY_TYPES, COUNTS, KINDS, STUCK_READINGS, inject
from nab_groups import group_scores, report

from edge_ml.config import load_config, parse_config

# The held-out groups and their streams' lengths (readings): the mention counts' files hold
# about 15,800 readings, the hourly metrics about 1,500, the traffic sensors about 2,500.
GROUPS: dict[str, tuple[tuple[str, ...], int]] = {
    "counts": (("mention_counts_5min", "mention_wander_5min"), 15000),
    "hourly": (("hourly_short_1500", "ad_cpc_hourly_1500"), 1500),
    "traffic": (("traffic_speed_5min", "traffic_gaps_5min", "occupancy_5min",
                 "travel_time_5min"), 2500),
}
# NAB scores a file from 15 % of its readings on; anomalies are placed in [SCORED_FROM, LAST].
SCORED_FROM = 0.2
LAST = 0.9
WINDOW_SHARE = 0.1  # NAB: the windows of a file together span 10 % of its readings


def stamp(t: float) -> str:
    """A NAB timestamp (UTC, whole seconds)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(round(t)))


def labelled_file(kind: str, n: int, seed: int) -> tuple[list[str], np.ndarray,
                                                           list[tuple[str, str]]]:
    """``(timestamps, values, windows)`` of one file: a stream of ``kind`` with 1-3 anomalies.

    Each anomaly is injected into the clean stream on its own and added as a difference, so
    its size comes from the stream's noise, not from the anomalies before it; a stuck value
    holds the reading it starts at, after the anomalies before it.
    """
    generate, _ = KINDS[kind]
    rng = np.random.default_rng(7000 + seed)
    ts, clean, signal = generate(n, rng)
    count = int(rng.integers(1, 4))
    part = (LAST - SCORED_FROM) * n / count
    values = clean.copy()
    starts = []
    for k in range(count):
        at = int(SCORED_FROM * n + part * (k + rng.uniform(0.0, 0.5)))
        anomaly = ANOMALY_TYPES[int(rng.integers(len(ANOMALY_TYPES)))]
        injected, _ = inject(kind, anomaly, ts, clean, signal, at, rng)
        if anomaly == "stuck":
            values[at:at + STUCK_READINGS] = values[at]
        else:
            values += injected - clean
        starts.append(at)
    if kind in COUNTS:
        values = np.maximum(np.round(values), 0.0)
    stamps = [stamp(t) for t in ts.tolist()]
    half = int(WINDOW_SHARE * n / count) // 2
    windows = [(stamps[max(at - half, 0)], stamps[min(at + half, n - 1)]) for at in starts]
    return stamps, values, windows


def write_corpus(folder: Path, files_per_kind: int) -> int:
    """NAB's layout under ``folder``: ``data/<group>/<kind>_<seed>.csv`` and
    ``labels/combined_windows.json``. Returns the number of files."""
    labels: dict[str, list[tuple[str, str]]] = {}
    for group, (kinds, n) in GROUPS.items():
        (folder / "data" / group).mkdir(parents=True)
        for kind in kinds:
            for seed in range(files_per_kind):
                stamps, values, windows = labelled_file(kind, n, seed)
                name = f"{group}/{kind}_{seed}.csv"
                lines = ["timestamp,value"]
                lines += [f"{t},{v!r}" for t, v in zip(stamps, values.tolist(), strict=True)]
                (folder / "data" / name).write_text("\n".join(lines) + "\n")
                labels[name] = windows
    (folder / "labels").mkdir()
    (folder / "labels" / "combined_windows.json").write_text(json.dumps(labels, indent=1))
    return len(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files-per-kind", type=int, default=4)
    parser.add_argument("--config", type=Path,
                        help="a TOML configuration to measure instead of the shipped defaults")
    parser.add_argument("--detail", action="store_true", help="one line per file")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    config = load_config(args.config) if args.config else parse_config({})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = write_corpus(folder, args.files_per_kind)
        result = group_scores(folder, args.detail, config)
    settings = args.config or "shipped defaults"
    report(result, f"{files} held-out-like files ({settings}): ", args.json, width=10)


if __name__ == "__main__":
    main()

"""The demo's simulated fleet over many seeds, replayed: what is found, what is false.

`edge-ml demo` runs one seeded fleet in real time through a broker and the daemon, so its
result moves with the wall clock (where the half-hour slots fall, how readings batch). This
script asks the same question deterministically and over many fleets: it builds
``firmware_bridge``'s fleet for each seed, replays its readings through the demo's own
configuration (``edge_ml.demo.DEMO_CONFIG``), and pairs the alerts with the injected anomalies
the way the demo does (``edge_ml.demo.match_alerts``).

    python benchmarks/fleet_replay.py --seeds 40
    python benchmarks/fleet_replay.py --seeds 20 --rate 1 --seconds 600   # a slower fleet

It prints, per anomaly kind, how many were found, and the false alarms per fleet and per 10,000
readings. Each fleet starts at a different time of day, so the anomalies fall at different
places of the profile's half-hour slots.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edge_ml.config import load_config
from edge_ml.demo import ANOMALY_START, DEMO_CONFIG, DEMO_WARMUP, match_alerts, write_readings
from edge_ml.replay import replay_tree
from edge_ml.report import load_stream
from edge_ml.timestamps import parse_timestamp
from firmware_bridge.simulator import Fleet

# The first fleet's start (UTC); each next seed starts 997 s later (a prime, so the half-hour
# slot boundaries fall everywhere in the run across seeds).
START_TS = 1_780_000_000.0
SEED_STEP_S = 997.0


def fleet_alerts(results: Path, streams: list[str]) -> list[dict[str, Any]]:
    """Every alert that opened in the replay's result files, as the daemon's alert rows."""
    alerts = []
    for stream in streams:
        result = load_stream(results / f"{stream}.csv")
        for row in np.flatnonzero(result.opened):
            alerts.append({"alert_id": f"{stream}:{len(alerts)}", "stream": stream,
                           "state": "open",
                           "opened_at": parse_timestamp(result.timestamps[row]),
                           "score": float(result.scores[row])})
    return alerts


def run_fleet(seed: int, *, sensors: int, rate: float, seconds: float,
              work: Path) -> dict[str, Any]:
    """One seeded fleet, replayed; its pairs, false alarms and readings."""
    fleet = Fleet(sensors=sensors, rate=rate, seconds=seconds, seed=seed,
                  anomaly_after=ANOMALY_START * seconds)
    start_ts = START_TS + seed * SEED_STEP_S
    folder = work / f"seed-{seed}"
    streams = [name.removesuffix(".csv") for name in
               write_readings(fleet, start_ts, folder / "readings")]
    config = folder / "edge-ml.toml"
    config.write_text(DEMO_CONFIG.format(port=1883, db=folder / "unused.db", warmup=DEMO_WARMUP))
    replay_tree(load_config(config), folder / "readings", folder / "results")
    truth = fleet.truth_rows(start_ts)
    pairs, false_alarms = match_alerts(truth, fleet_alerts(folder / "results", streams))
    return {"seed": seed, "readings": fleet.ticks_total * len(streams),
            "found": [(a["kind"], found is not None, found["score"] if found else None)
                      for a, found in pairs],
            "false": [(f["stream"], f["score"]) for f in false_alarms]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--sensors", type=int, default=8)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--json", type=Path, help="write every fleet's result here")
    args = parser.parse_args(argv)
    fleets = []
    with tempfile.TemporaryDirectory(prefix="fleet-replay-") as tmp:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            fleets.append(run_fleet(seed, sensors=args.sensors, rate=args.rate,
                                    seconds=args.seconds, work=Path(tmp)))
    injected: Counter[str] = Counter()
    found: Counter[str] = Counter()
    for fleet in fleets:
        for kind, hit, _score in fleet["found"]:
            injected[kind] += 1
            found[kind] += hit
    readings = sum(f["readings"] for f in fleets)
    false_total = sum(len(f["false"]) for f in fleets)
    print(f"{len(fleets)} fleets x {args.sensors} nodes x {args.rate:g} Hz x {args.seconds:g} s "
          f"(seeds {args.first_seed}-{args.first_seed + args.seeds - 1}), {readings} readings")
    for kind in sorted(injected):
        print(f"  {kind:<12} found {found[kind]:>3} of {injected[kind]:>3}")
    print(f"  {'all':<12} found {sum(found.values()):>3} of {sum(injected.values()):>3}")
    print(f"false alarms {false_total} ({false_total / len(fleets):.2f} a fleet, "
          f"{false_total / readings * 1e4:.2f} per 10k readings)")
    if args.json:
        args.json.write_text(json.dumps(fleets, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

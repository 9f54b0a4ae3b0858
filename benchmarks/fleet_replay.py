"""The demo's simulated fleet over many seeds, replayed: what is found, what is false.

`edge-ml demo` runs one seeded fleet in real time through a broker and the daemon, so its
result moves with the wall clock (where the half-hour slots fall, how readings batch). This
script asks the same question deterministically and over many fleets: it builds
``firmware_bridge``'s fleet for each seed, replays its readings through the demo's own
configuration (``edge_ml.demo.DEMO_CONFIG``), and pairs the alerts with the injected anomalies
the way the demo does (``edge_ml.demo.match_alerts``).

    python benchmarks/fleet_replay.py --seeds 40
    python benchmarks/fleet_replay.py --seeds 20 --rate 1 --seconds 600   # a slower fleet
    python benchmarks/fleet_replay.py --first-seed 7 --seeds 1 --starts 900 --start-step 2 \
        --first-start 0

The last asks what the live demo (seed 7) finds when it starts at any even second of a half
hour (its anomalies then fall at every place of a half-hour profile slot), and lists every
start that missed an anomaly or raised a false alarm, by its second in the half hour.

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

from edge_ml.config import parse_config
from edge_ml.demo import ANOMALY_START, replay_fleet
from firmware_bridge.simulator import Fleet

# The first fleet's start (UTC); each next seed starts 997 s later (a prime, so the half-hour
# slot boundaries fall everywhere in the run across seeds).
START_TS = 1_780_000_000.0
SEED_STEP_S = 997.0
# A profile slot's width (half an hour at the defaults, which the demo's configuration keeps).
_FEATURES = parse_config({}).features
SLOT_S = _FEATURES.season_s / _FEATURES.season_bins


def run_fleet(seed: int, *, sensors: int, rate: float, seconds: float, start_ts: float,
              work: Path) -> dict[str, Any]:
    """One seeded fleet, replayed from ``start_ts``; its pairs, false alarms and readings."""
    fleet = Fleet(sensors=sensors, rate=rate, seconds=seconds, seed=seed,
                  anomaly_after=ANOMALY_START * seconds)
    pairs, false_alarms, readings = replay_fleet(fleet, start_ts, work)
    return {"seed": seed, "start_ts": start_ts, "readings": readings,
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
    parser.add_argument("--starts", type=int, default=1,
                        help="runs of each seed, --start-step seconds apart")
    parser.add_argument("--start-step", type=float, default=15.0)
    parser.add_argument("--first-start", type=float,
                        help="seconds into a half hour of each seed's first start (default: "
                             "the seed's own start)")
    parser.add_argument("--json", type=Path, help="write every fleet's result here")
    args = parser.parse_args(argv)
    fleets = []
    with tempfile.TemporaryDirectory(prefix="fleet-replay-") as tmp:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for start in range(args.starts):
                first = START_TS + seed * SEED_STEP_S
                if args.first_start is not None:
                    first += args.first_start - first % SLOT_S
                start_ts = first + start * args.start_step
                fleets.append(run_fleet(seed, sensors=args.sensors, rate=args.rate,
                                        seconds=args.seconds, start_ts=start_ts,
                                        work=Path(tmp) / f"seed-{seed}-start-{start}"))
    injected: Counter[str] = Counter()
    found: Counter[str] = Counter()
    for fleet in fleets:
        for kind, hit, _score in fleet["found"]:
            injected[kind] += 1
            found[kind] += hit
    readings = sum(f["readings"] for f in fleets)
    false_total = sum(len(f["false"]) for f in fleets)
    print(f"{len(fleets)} fleets x {args.sensors} nodes x {args.rate:g} Hz x {args.seconds:g} s "
          f"(seeds {args.first_seed}-{args.first_seed + args.seeds - 1}, {args.starts} start(s) "
          f"each), {readings} readings")
    for kind in sorted(injected):
        print(f"  {kind:<12} found {found[kind]:>3} of {injected[kind]:>3}")
    print(f"  {'all':<12} found {sum(found.values()):>3} of {sum(injected.values()):>3}")
    print(f"false alarms {false_total} ({false_total / len(fleets):.2f} a fleet, "
          f"{false_total / readings * 1e4:.2f} per 10k readings)")
    if args.starts > 1:
        for fleet in fleets:
            missed = [kind for kind, hit, _score in fleet["found"] if not hit]
            if missed or fleet["false"]:
                second = fleet["start_ts"] % SLOT_S
                print(f"  seed {fleet['seed']} starting {second:6.0f} s into a half hour: "
                      f"missed {missed or 'none'}, false {fleet['false'] or 'none'}")
    if args.json:
        args.json.write_text(json.dumps(fleets, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

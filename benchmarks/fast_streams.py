"""Streams read faster than once a second: false alerts without anomalies, and the load
benchmark's latency traffic replayed offline.

NAB and the calibration suite read once a second or slower, so they cannot show how a fast
stream is calibrated (since round 17 its profile learns per second, not per reading). Two parts,
each through the product's own pipeline (``edge_ml.replay``), shipped defaults unless
``--config``:

1. **Anomaly-free 20 Hz streams** (``--seeds`` streams of ``--readings`` each): Gaussian,
   Student-t3 and log-normal noise; alerts per 10,000 readings per kind.
2. **The latency traffic of** ``benchmarks/load.py``, without a broker or a clock: 24 streams
   round-robin at 1,000 readings/s (about 42 a second each), a sine of 0.3 plus unit Gaussian
   noise, and from 4 s on every 25th reading starts a spike of 25 over two of its stream's
   readings (``publisher.py --spike-every-n 25 --spike-readings 2 --spike-after-s 4``), with
   the load run's alert settings. Every stream spikes on 8 % of its readings. Prints the alerts
   opened beside the spikes sent: the live run's count moves with how readings batch, this one
   does not.

    python benchmarks/fast_streams.py
    python benchmarks/fast_streams.py --seeds 5 --latency-seconds 36
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from calibration_suite import replay, write_csv
from publisher import NOISE, SPIKE, WAVE

from edge_ml.config import Config, load_config

START_TS = 1_780_000_000.0
RATE_HZ = 20.0
NoiseKind = Callable[[np.random.Generator, int], np.ndarray]
KINDS: dict[str, NoiseKind] = {
    "gaussian_20hz": lambda rng, n: 20.0 + rng.normal(0.0, 1.0, n),
    "student_t3_20hz": lambda rng, n: 20.0 + rng.standard_t(3, n),
    "lognormal_20hz": lambda rng, n: rng.lognormal(0.0, 1.0, n),
}

# The latency traffic (benchmarks/load.py, LATENCY_TRAFFIC) and the load run's alert settings.
LATENCY_STREAMS = 24
LATENCY_RATE = 1000.0
SPIKE_EVERY_N = 25
SPIKE_READINGS = 2
SPIKE_AFTER_S = 4.0
Traffic = tuple[list[np.ndarray], list[np.ndarray], int]


def latency_config(config: Config) -> Config:
    """``config`` with the load run's latency settings (benchmarks/load.py)."""
    return replace(config, model=replace(config.model, warmup=100),
                   alerts=replace(config.alerts, debounce=1, cooldown_s=0.0,
                                  cooldown_readings=10))


def false_alerts(config: Config, seeds: int, readings: int, work: Path) -> dict[str, float]:
    """Alerts per 10,000 readings on each anomaly-free 20 Hz kind."""
    rates = {}
    ts = START_TS + np.arange(readings) / RATE_HZ
    for name, noise in KINDS.items():
        alerts = 0
        for seed in range(seeds):
            source, out = work / f"{name}_{seed}.csv", work / f"{name}_{seed}.out.csv"
            write_csv(source, ts, noise(np.random.default_rng(seed), readings))
            alerts += len(replay(config, source, out))
        rates[name] = 1e4 * alerts / (seeds * readings)
    return rates


def latency_traffic(seconds: float, seed: int = 0) -> Traffic:
    """Timestamps and values per stream of the latency traffic, and the spikes in it (the
    publisher's noise, sine and spike size)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, NOISE, 65_536)
    phase = rng.uniform(0.0, 2.0 * math.pi, LATENCY_STREAMS)
    sent = np.arange(int(LATENCY_RATE * seconds))
    stream = sent % LATENCY_STREAMS
    values = WAVE * np.sin(sent // LATENCY_STREAMS / 50.0 + phase[stream]) + noise[sent & 0xFFFF]
    starts = sent[(sent / LATENCY_RATE >= SPIKE_AFTER_S) & (sent % SPIKE_EVERY_N == 0)]
    for k in range(SPIKE_READINGS):  # a stream's next readings are LATENCY_STREAMS apart
        held = starts + k * LATENCY_STREAMS
        values[held[held < len(sent)]] += SPIKE
    ts = START_TS + sent / LATENCY_RATE
    return ([ts[stream == s] for s in range(LATENCY_STREAMS)],
            [values[stream == s] for s in range(LATENCY_STREAMS)], len(starts))


def latency_alerts(config: Config, seconds: float, work: Path) -> tuple[int, int]:
    """``(alerts opened, spikes sent)`` over the latency traffic."""
    times, values, spikes = latency_traffic(seconds)
    alerts = 0
    for s in range(LATENCY_STREAMS):
        source, out = work / f"latency_{s}.csv", work / f"latency_{s}.out.csv"
        write_csv(source, times[s], values[s])
        alerts += len(replay(config, source, out))
    return alerts, spikes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--readings", type=int, default=24_000, help="per 20 Hz stream")
    parser.add_argument("--latency-seconds", type=float, default=36.0,
                        help="of latency traffic (load.py --quick publishes ~32-36 s of it)")
    parser.add_argument("--config", type=Path, help="a TOML configuration instead of the "
                        "shipped defaults (part 2 sets the load run's alert settings on it)")
    args = parser.parse_args(argv)
    config = load_config(args.config) if args.config else Config()
    with tempfile.TemporaryDirectory(prefix="fast-streams-") as tmp:
        work = Path(tmp)
        rates = false_alerts(config, args.seeds, args.readings, work)
        alerts, spikes = latency_alerts(latency_config(config), args.latency_seconds, work)
    print(f"false alerts per 10,000 readings ({args.seeds} streams x {args.readings} readings "
          f"at {RATE_HZ:g} Hz, no anomalies):")
    for name, rate in rates.items():
        print(f"  {name:<18} {rate:5.2f}")
    print(f"latency traffic, {args.latency_seconds:g} s offline: {alerts} alerts opened for "
          f"{spikes} spikes")
    return 0



if __name__ == "__main__":
    sys.exit(main())

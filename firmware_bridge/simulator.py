"""A simulated sensor fleet with injected, labelled anomalies (no MQTT: a plain library).

The model only; :mod:`firmware_bridge.fleet_publisher` plays it to a broker in real time.

Each node ``node-1 .. node-N`` carries 1-3 measurements from :data:`SIGNALS`. A stream's value at
time ``t`` (seconds since the run started) is::

    base + amplitude * sin(2*pi*(t / day_seconds + phase)) + drift * t + noise_sigma * N(0, 1)

plus the effect of any anomaly covering ``t``. Anomalies are placed after ``anomaly_after``
seconds, never overlapping on one stream, with sizes in units of the stream's noise sigma so they
are plainly visible to a detector yet physically plausible:

- ``spike``: 1-3 samples offset by 6-10 sigma (a glitch, an electrical transient)
- ``level_shift``: an offset of 5-8 sigma held 3-6 s (a door opened, a recalibration)
- ``stuck``: the value freezes for 3-6 s (a hung ADC, a sensor that stopped updating)
- ``noise_burst``: the noise grows 5-8 times for 2-4 s (a loose connector, interference)
- ``drift``: a ramp to 6-10 sigma over 4-8 s, then a snap back (a failing sensor, fouling)

Stream names follow the edge-ml daemon: ``<prefix>/<dev>/<field>``. Everything follows from the
seed, so two fleets built with the same arguments produce identical readings and truth.

Examples
--------
>>> fleet = Fleet(sensors=2, rate=5, seconds=10, seed=1, anomaly_after=4, anomalies=2)
>>> len(fleet.truth)
2
>>> readings = list(fleet.readings(start_ts=1_700_000_000.0))
>>> readings[0].stream.startswith("sensors/node-1/"), readings[0].ts
(True, 1700000000.0)
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Signal:
    """A kind of measurement: its typical level, daily swing, noise and physical bounds."""

    base: float
    amplitude: float
    noise: float
    drift_per_hour: float
    low: float = -math.inf
    high: float = math.inf


#: Measurement kinds a node may carry.
SIGNALS: dict[str, Signal] = {
    "temperature": Signal(base=21.0, amplitude=3.0, noise=0.15, drift_per_hour=0.5),
    "humidity": Signal(base=45.0, amplitude=8.0, noise=0.6, drift_per_hour=1.0, low=0, high=100),
    "vibration": Signal(base=0.02, amplitude=0.004, noise=0.003, drift_per_hour=0.001, low=0),
    "pressure": Signal(base=1013.0, amplitude=1.5, noise=0.2, drift_per_hour=0.3),
}

ANOMALY_KINDS = ("spike", "level_shift", "stuck", "noise_burst", "drift")
#: Quiet seconds kept between two anomalies of one stream, so each has a clean lead-in.
GUARD_S = 1.0


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One injected anomaly: times are seconds since the run started, ``end`` exclusive."""

    stream: str
    kind: str
    start: float
    end: float
    magnitude: float  # in noise sigmas (signed); the noise factor for noise_burst

    def truth_row(self, start_ts: float) -> dict[str, object]:
        """The truth-file row for a run that started at epoch ``start_ts``."""
        return {
            "stream": self.stream,
            "start": round(start_ts + self.start, 6),
            "end": round(start_ts + self.end, 6),
            "kind": self.kind,
        }


@dataclass(frozen=True, slots=True)
class Reading:
    """One simulated value of one stream."""

    stream: str
    ts: float
    value: float


class _Stream:
    """One measurement of one node: its signal parameters and current anomaly state."""

    def __init__(self, name: str, signal: Signal, rng: random.Random, day_seconds: float) -> None:
        self.name = name
        self.signal = signal
        self.day_seconds = day_seconds
        self.base = signal.base + rng.uniform(-1, 1) * signal.amplitude * 0.5
        self.amplitude = signal.amplitude * rng.uniform(0.7, 1.3)
        self.phase = rng.random()
        self.noise = signal.noise * rng.uniform(0.8, 1.2)
        self.drift = signal.drift_per_hour / 3600 * rng.uniform(-1, 1)
        self.anomalies: list[Anomaly] = []
        self._stuck_at: float | None = None
        self._last = self.base

    def value(self, t: float, rng: random.Random) -> float:
        clean = (self.base + self.amplitude * math.sin(2 * math.pi * (t / self.day_seconds
                 + self.phase)) + self.drift * t)
        noise = rng.gauss(0.0, 1.0) * self.noise
        anomaly = next((a for a in self.anomalies if a.start <= t < a.end), None)
        if anomaly is None:
            self._stuck_at = None
            value = clean + noise
        elif anomaly.kind == "stuck":
            if self._stuck_at is None:
                self._stuck_at = self._last
            value = self._stuck_at
        elif anomaly.kind == "noise_burst":
            value = clean + noise * anomaly.magnitude
        elif anomaly.kind == "drift":
            progress = (t - anomaly.start) / (anomaly.end - anomaly.start)
            value = clean + noise + anomaly.magnitude * self.noise * progress
        else:  # spike, level_shift: a constant offset over the window
            value = clean + noise + anomaly.magnitude * self.noise
        value = min(max(value, self.signal.low), self.signal.high)
        self._last = value
        return value


class SimulatedSensor:
    """One node: a device id and its 1-3 streams, all driven by one seeded generator."""

    def __init__(
        self, dev: str, fields: list[str], rng: random.Random, prefix: str, day_seconds: float
    ) -> None:
        self.dev = dev
        self.rng = rng
        self.streams = {
            name: _Stream(f"{prefix}/{dev}/{name}", SIGNALS[name], rng, day_seconds)
            for name in fields
        }

    def measurements(self, t: float) -> dict[str, float]:
        """The node's values at ``t`` seconds into the run (call with increasing ``t``)."""
        return {name: stream.value(t, self.rng) for name, stream in self.streams.items()}


class Fleet:
    """N simulated nodes plus the schedule of anomalies injected into their streams.

    Parameters
    ----------
    sensors
        Number of nodes, named ``node-1 .. node-N``.
    rate
        Readings per second per node.
    seconds
        Run length; ticks are at ``k / rate`` for ``k < seconds * rate``.
    seed
        Everything (fields, signal parameters, noise, anomalies) follows from it.
    prefix
        Topic prefix: nodes publish to ``<prefix>/<dev>``, streams are ``<prefix>/<dev>/<field>``.
    anomaly_after
        No anomaly starts earlier (seconds); default 40% of ``seconds``, leaving a clean warm-up.
    anomalies
        How many anomalies in the whole fleet; default one per node. Fewer are placed when they
        do not fit (logged).
    day_seconds
        Period of the daily cycle, so a short demo still shows one.
    """

    def __init__(
        self,
        sensors: int = 8,
        rate: float = 10.0,
        seconds: float = 60.0,
        seed: int = 0,
        prefix: str = "sensors",
        anomaly_after: float | None = None,
        anomalies: int | None = None,
        day_seconds: float = 86_400.0,
    ) -> None:
        if sensors < 1 or rate <= 0 or seconds <= 0 or day_seconds <= 0:
            raise ValueError("sensors, rate, seconds and day_seconds must be positive")
        self.rate = rate
        self.seconds = seconds
        self.seed = seed
        self.prefix = prefix
        self.anomaly_after = seconds * 0.4 if anomaly_after is None else anomaly_after
        names = list(SIGNALS)
        self.nodes: list[SimulatedSensor] = []
        for i in range(1, sensors + 1):
            rng = random.Random(f"{seed}:node-{i}")
            fields = rng.sample(names, rng.randint(1, 3))
            self.nodes.append(
                SimulatedSensor(f"node-{i}", fields, rng, prefix, day_seconds)
            )
        self.truth = self._schedule(sensors if anomalies is None else anomalies)

    @property
    def ticks_total(self) -> int:
        """Number of ticks in the run."""
        return int(self.seconds * self.rate)

    @property
    def streams(self) -> list[str]:
        """Every stream name, node by node."""
        return [s.name for node in self.nodes for s in node.streams.values()]

    def _schedule(self, count: int) -> list[Anomaly]:
        rng = random.Random(f"{self.seed}:anomalies")
        streams = [s for node in self.nodes for s in node.streams.values()]
        rng.shuffle(streams)
        kinds = list(ANOMALY_KINDS)
        rng.shuffle(kinds)
        lo, hi = self.anomaly_after, self.seconds - GUARD_S
        placed: list[Anomaly] = []
        for i in range(count):
            kind = kinds[i % len(kinds)]
            for attempt in range(len(streams)):
                stream = streams[(i + attempt) % len(streams)]
                anomaly = self._place(rng, stream, kind, lo, hi)
                if anomaly is not None:
                    stream.anomalies.append(anomaly)
                    placed.append(anomaly)
                    break
        if len(placed) < count:
            log.warning("only %s of %s anomalies fit between %.1fs and %.1fs", len(placed), count,
                        lo, hi)
        placed.sort(key=lambda a: (a.start, a.stream))
        return placed

    def _place(
        self, rng: random.Random, stream: _Stream, kind: str, lo: float, hi: float
    ) -> Anomaly | None:
        sign = rng.choice((-1.0, 1.0))
        if kind == "spike":
            duration = rng.randint(1, 3) / self.rate
            magnitude = sign * rng.uniform(6, 10)
        elif kind == "level_shift":
            duration, magnitude = rng.uniform(3, 6), sign * rng.uniform(5, 8)
        elif kind == "stuck":
            duration, magnitude = rng.uniform(3, 6), 0.0
        elif kind == "noise_burst":
            duration, magnitude = rng.uniform(2, 4), rng.uniform(5, 8)
        else:
            duration, magnitude = rng.uniform(4, 8), sign * rng.uniform(6, 10)
        if hi - lo < 1 / self.rate:
            return None
        duration = min(duration, hi - lo)  # short runs get shorter anomalies, not none
        for _ in range(50):
            # Start on a tick so the first affected sample is the window's first.
            start = math.ceil(rng.uniform(lo, hi - duration) * self.rate) / self.rate
            end = start + duration
            if end > hi:
                continue
            if all(end + GUARD_S <= a.start or a.end + GUARD_S <= start for a in stream.anomalies):
                return Anomaly(stream.name, kind, start, end, magnitude)
        return None

    def truth_rows(self, start_ts: float) -> list[dict[str, object]]:
        """Truth-file rows (``stream``, ``start``, ``end``, ``kind``) for a run at ``start_ts``."""
        return [a.truth_row(start_ts) for a in self.truth]

    def ticks(self) -> Iterator[tuple[float, SimulatedSensor, dict[str, float]]]:
        """``(t, node, measurements)`` for every tick and node, in time order."""
        for k in range(self.ticks_total):
            t = k / self.rate
            for node in self.nodes:
                yield t, node, node.measurements(t)

    def readings(self, start_ts: float = 0.0) -> Iterator[Reading]:
        """Every ``(stream, ts, value)`` of the run, with ``ts = start_ts + t``."""
        prefix = self.prefix
        for t, node, values in self.ticks():
            for name, value in values.items():
                yield Reading(f"{prefix}/{node.dev}/{name}", start_ts + t, value)

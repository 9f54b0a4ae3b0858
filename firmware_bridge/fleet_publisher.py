"""Play a simulated fleet (see simulator.py) to MQTT in real time and write its truth file."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from firmware_bridge.errors import BridgeError
from firmware_bridge.frame import MAX_SEQ, encode_frame
from firmware_bridge.mqtt import MqttLink
from firmware_bridge.simulator import Fleet

log = logging.getLogger(__name__)

FORMATS = ("frame", "json")


@dataclass(frozen=True, slots=True)
class SimulationResult:
    """What a simulation run did."""

    sent: int
    dropped: int
    anomalies: int
    elapsed_s: float
    delivered: bool


def encode_payload(fmt: str, dev: str, seq: int, ts: float, values: dict[str, float]) -> bytes:
    """The payload a node publishes: a v1 frame, or JSON ``{"ts": ..., field: value, ...}``."""
    if fmt == "frame":
        return encode_frame(dev, seq & MAX_SEQ, ts, values)
    return json.dumps({"ts": ts, **values}, separators=(",", ":")).encode()


def run_simulation(
    fleet: Fleet,
    link: MqttLink,
    *,
    truth_path: Path,
    fmt: str = "frame",
    qos: int = 1,
    connect_timeout: float = 10.0,
    drain_timeout: float = 30.0,
    stop: threading.Event | None = None,
) -> SimulationResult:
    """Publish every tick of ``fleet`` on time (monotonic pacing) and record the truth.

    A reading's ``ts`` is the wall-clock time its tick was scheduled for (start time plus the
    tick offset), so it lines up exactly with the truth windows. Raises BridgeError when the
    broker cannot be reached within ``connect_timeout``.
    """
    if fmt not in FORMATS:
        raise BridgeError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    stop = stop or threading.Event()
    link.start()
    if not link.wait_connected(connect_timeout):
        link.stop(timeout=0)
        raise BridgeError(
            f"no MQTT broker at {link.settings.host}:{link.settings.port} "
            f"after {connect_timeout:g}s"
        )
    start_wall = time.time()
    start_mono = time.monotonic()
    truth_path.parent.mkdir(parents=True, exist_ok=True)
    sent = 0
    seqs = {node.dev: 0 for node in fleet.nodes}
    with truth_path.open("w", encoding="utf-8") as truth:
        for row in fleet.truth_rows(start_wall):
            truth.write(json.dumps(row) + "\n")
        truth.flush()
        for t, node, values in fleet.ticks():
            if stop.is_set():
                break
            delay = start_mono + t - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
            payload = encode_payload(fmt, node.dev, seqs[node.dev], start_wall + t, values)
            seqs[node.dev] += 1
            link.publish(f"{fleet.prefix}/{node.dev}", payload, qos=qos)
            sent += 1
    # Interrupted runs (SIGTERM) get a short goodbye, not the full drain wait.
    delivered = link.wait_delivered(2.0 if stop.is_set() else drain_timeout)
    elapsed = time.monotonic() - start_mono
    dropped = link.dropped
    link.stop()
    return SimulationResult(sent, dropped, len(fleet.truth), elapsed, delivered)

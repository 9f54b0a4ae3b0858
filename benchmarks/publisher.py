"""Load publisher for the daemon benchmarks: several streams, a fixed rate or flat out.

Runs as its own process (``python benchmarks/publisher.py ...``) so the publisher's CPU is not
charged to the consumer being measured. Loopback only: ``--host`` must be 127.0.0.1.

Payload forms (``--form``): ``number`` (bare text), ``json`` (``{"value": v}``), ``msgpack``
(the same map), ``frame`` (firmware frame v1 with two measurements, so two readings per
message), ``json4`` (``{"current": .., "flow": .., "pressure": .., "vibration": ..}``: four
readings per message, which the daemon takes as a device of four fields). ``--with-ts``
adds ``"ts"`` = the publish time (JSON/msgpack/frame), which the daemon copies into the alert:
the load script times publish-to-alert from it. ``--spike-every-s`` turns one reading
(round-robin over the streams) into a large spike at that interval;
``--spike-every-n`` makes every n-th message a spike instead (a count that does not depend on
how well the publisher keeps its rate; with n and ``--streams`` coprime, every stream in turn).
``--spike-readings k`` holds each spike for k of its stream's own consecutive readings (one
spike counted): the detector learns a stream's *isolated* extremes as its normal tail, so a
stream spiking alone every few dozen readings stops alerting, as it should; a run of two does not.

The last line on stdout is a JSON summary: messages, readings, seconds, spikes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from typing import Any

import msgpack
import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

LOOPBACK = "127.0.0.1"
FORMS = ("number", "json", "msgpack", "frame", "json4")
# Normal readings: stationary unit Gaussian noise plus a small sine per stream (no drift).
NOISE = 1.0
WAVE = 0.3
SPIKE = 25.0
MAX_UNACKED = 30_000


def payload(form: str, value: float, ts: float | None, seq: int, stream: int) -> bytes:
    """One message body in the given form."""
    if form == "number":
        return b"%.5f" % value
    if form == "frame":
        return msgpack.packb(
            {"v": 1, "dev": f"node-{stream}", "seq": seq,
             "ts": ts if ts is not None else time.time(),
             "m": {"temperature": value, "vibration": value * 0.5}}
        )
    if form == "json4":  # a pump: four related fields
        four = {"current": round(4.0 + value, 5), "flow": round(12.0 + 2.0 * value, 5),
                "pressure": round(2.5 + 0.1 * value, 5), "vibration": round(0.3 * value, 5)}
        if ts is not None:
            four["ts"] = ts
        return json.dumps(four).encode()
    body: dict[str, float] = {"value": value}
    if ts is not None:
        body["ts"] = ts
    if form == "json":
        return json.dumps(body).encode()
    return msgpack.packb(body)


def readings_per_message(form: str) -> int:
    return {"frame": 2, "json4": 4}.get(form, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--prefix", default="sensors/load")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="messages per second in total (0: as fast as possible)")
    parser.add_argument("--count", type=int, default=10_000, help="messages to publish at most")
    parser.add_argument("--seconds", type=float, default=60.0, help="stop after this long")
    parser.add_argument("--form", choices=FORMS, default="number")
    parser.add_argument("--qos", type=int, default=1, choices=(0, 1))
    parser.add_argument("--with-ts", action="store_true")
    parser.add_argument("--spike-every-s", type=float, default=0.0)
    parser.add_argument("--spike-every-n", type=int, default=0)
    parser.add_argument("--spike-after-s", type=float, default=0.0,
                        help="no spikes before this (warm-up)")
    parser.add_argument("--spike-readings", type=int, default=1,
                        help="each spike lasts this many of its stream's readings")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--client-id", default="edge-ml-bench-publisher")
    args = parser.parse_args(argv)
    if args.host != LOOPBACK:
        parser.error("loopback only: --host must be 127.0.0.1")

    rng = np.random.default_rng(args.seed)
    noise = rng.normal(0.0, NOISE, 65_536)
    phase = rng.uniform(0, 2 * math.pi, args.streams)
    topics = [f"{args.prefix}/s{i}" for i in range(args.streams)]

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=args.client_id)
    # Messages the broker has acknowledged (QoS 1) or that went out (QoS 0), counted here rather
    # than read from paho's private queue: sent - acked is what is still in flight.
    acked = [0]
    acked_lock = threading.Lock()

    def on_publish(client: paho.Client, userdata: Any, mid: int, reason: Any,
                   props: Any) -> None:
        with acked_lock:
            acked[0] += 1

    client.on_publish = on_publish
    # Unlimited in flight (paho rescans its whole queue per ack when a window is set); the
    # loop below keeps fewer unacknowledged than there are 16-bit message ids.
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    client.connect(args.host, args.port, keepalive=60)
    client.loop_start()

    started = time.perf_counter()
    deadline = started + args.seconds
    next_spike = started + max(args.spike_after_s, 0.0)
    spike_stream = 0
    spikes = 0
    spike_left = [0] * args.streams  # readings of an open spike still to send, per stream
    sent = 0
    last_info = None
    while sent < args.count:
        now = time.perf_counter()
        if now >= deadline:
            break
        if args.rate > 0:
            due = min(args.count, int((now - started) * args.rate) + 1)
            if due <= sent:
                time.sleep(min(0.0005, (sent + 1) / args.rate - (now - started)))
                continue
        else:
            due = min(args.count, sent + 1000)
        # Message ids are 16 bits: never have more than that unacknowledged.
        while sent - acked[0] > MAX_UNACKED and time.perf_counter() < deadline:
            time.sleep(0.001)
        while sent < due:
            stream = sent % args.streams
            k = sent // args.streams  # this stream's reading number
            value = WAVE * math.sin(k / 50.0 + phase[stream]) + noise[sent & 0xFFFF]
            if spike_left[stream] > 0:
                value += SPIKE
                spike_left[stream] -= 1
            elif args.spike_every_n > 0:
                if now >= next_spike and sent % args.spike_every_n == 0:
                    value += SPIKE
                    spikes += 1
                    spike_left[stream] = args.spike_readings - 1
            elif args.spike_every_s > 0 and stream == spike_stream and now >= next_spike:
                value += SPIKE
                spikes += 1
                spike_left[stream] = args.spike_readings - 1
                next_spike = now + args.spike_every_s
                spike_stream = (spike_stream + 1) % args.streams
            ts = time.time() if args.with_ts else None
            last_info = client.publish(topics[stream], payload(args.form, value, ts, sent, stream),
                                       qos=args.qos)
            sent += 1
    elapsed = time.perf_counter() - started
    # Every QoS 1 message acknowledged by the broker before we report.
    if last_info is not None and args.qos:
        last_info.wait_for_publish(timeout=60)
    wait_until = time.monotonic() + 60
    while acked[0] < sent and time.monotonic() < wait_until:
        time.sleep(0.01)
    client.disconnect()
    client.loop_stop()
    summary = {"messages": sent, "readings": sent * readings_per_message(args.form),
               "seconds": round(elapsed, 3), "spikes": spikes,
               "rate": round(sent / elapsed, 1) if elapsed > 0 else 0.0}
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reference consumers for the load benchmark: a bare counter and a naive daemon.

``--mode count``: a bare paho-mqtt v2 subscriber that only counts messages: the ceiling of
what a Python MQTT consumer can take from the broker on this machine.

``--mode naive``: what a first attempt at edge-ml would look like, all per message: decode
(float / JSON / msgpack), NumPy window features, river ``HalfSpaceTrees`` score then learn, one
SQLite insert (and commit) per reading, in WAL mode with ``synchronous=NORMAL`` as the daemon.

``--mode relay``: the transport floor of the latency benchmark: a bare subscriber that
publishes ``{"state": "open", "ts": <reading ts>}`` (QoS 1, ``edge-ml/alerts/relay``) for every
JSON reading above ``--threshold`` whose topic's reading before was not (an alert opens once
per spike, however many readings it lasts): publish-to-alert without any model or storage.

All subscribe QoS 1 with a persistent session (``--prepare`` connects once, subscribes and
leaves, so the broker queues what is published next), count until ``--expect`` messages have
arrived (or ``--seconds`` passed) and print one JSON line: messages, seconds from the first to
the last message, CPU seconds of the process from the first message on, and ``samples``: the
count every ``--sample-s`` seconds (``[seconds since start, messages]``).

Like the daemon, every mode runs the daemon's own client class, ``edge_ml.mqtt.BurstClient``,
on paho's network thread (``loop_start``): every packet waiting is read per wake-up, and the
messages of a wake-up are handled together (``on_burst``); the main thread only samples the
count. The samples are taken on the daemon's health schedule (0.5 s in ``load.py``), so
``load.py`` computes every consumer's drain rate the same way, from samples strictly inside the
drain. Each sample is also published (QoS 1, ``edge-ml-bench/<client id>/count``) as the daemon
publishes its health. (With paho's plain client this mattered: it reads up to one packet per
unacknowledged outgoing message per wake-up, so the daemon, whose health acks queued behind
the backlog, read 2-10 packets per ``select`` and a silent counter one. The burst client reads
what is there either way.) Loopback only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import sys
import threading
import time
from collections import deque
from typing import Any

import msgpack
import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge_ml.mqtt import BurstClient

LOOPBACK = "127.0.0.1"
WINDOW = 32


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class NaiveModel:
    """Per-stream NumPy window features and a river HST per stream, one reading at a time."""

    def __init__(self, db_path: str) -> None:
        from river.anomaly import HalfSpaceTrees

        self._hst_cls = HalfSpaceTrees
        self.windows: dict[str, deque[float]] = {}
        self.models: dict[str, Any] = {}
        # Opened here, used only on paho's network thread (on_message).
        self.conn = sqlite3.connect(db_path, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS readings (stream TEXT, ts REAL, value REAL, score REAL)"
        )
        self.conn.commit()

    @staticmethod
    def decode(payload: bytes) -> float | None:
        try:
            return float(payload)
        except ValueError:
            pass
        try:
            obj = json.loads(payload) if payload[:1] == b"{" else msgpack.unpackb(payload)
        except Exception:
            return None
        if isinstance(obj, dict):
            value = obj.get("value", (obj.get("m") or {}).get("temperature"))
            if isinstance(value, int | float) and math.isfinite(value):
                return float(value)
        return None

    def process(self, topic: str, payload: bytes) -> None:
        value = self.decode(payload)
        if value is None:
            return
        window = self.windows.setdefault(topic, deque(maxlen=WINDOW))
        window.append(value)
        arr = np.fromiter(window, dtype=np.float64)
        std = float(arr.std())
        feats = {"mean": float(arr.mean()), "std": std, "z": (value - arr.mean()) / (std or 1.0)}
        # HST wants features in [0, 1]: squash them.
        x = {k: 1.0 / (1.0 + math.exp(-max(min(v, 50.0), -50.0))) for k, v in feats.items()}
        model = self.models.get(topic)
        if model is None:
            model = self.models[topic] = self._hst_cls(n_trees=10, height=8, window_size=250,
                                                       seed=42)
        score = model.score_one(x)
        model.learn_one(x)
        self.conn.execute("INSERT INTO readings VALUES (?, ?, ?, ?)",
                          (topic, time.time(), value, score))
        self.conn.commit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("count", "naive", "relay"), required=True)
    parser.add_argument("--threshold", type=float, default=10.0, help="relay: spike level")
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topic", default="sensors/#")
    parser.add_argument("--client-id", default="edge-ml-bench-consumer")
    parser.add_argument("--db", default=":memory:")
    parser.add_argument("--expect", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--prepare", action="store_true",
                        help="create the persistent session and leave")
    parser.add_argument("--sample-s", type=float, default=0.5,
                        help="seconds between samples of the count (the daemon's health "
                             "interval in load.py)")
    args = parser.parse_args(argv)
    if args.host != LOOPBACK:
        parser.error("loopback only: --host must be 127.0.0.1")

    model = NaiveModel(args.db) if args.mode == "naive" and not args.prepare else None
    state = {"n": 0, "first": 0.0, "last": 0.0, "cpu0": 0.0}
    topic_high: dict[str, bool] = {}  # relay: was the topic's last reading above threshold
    subscribed = threading.Event()
    done = threading.Event()

    def on_connect(client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        client.subscribe(args.topic, qos=1)

    def on_subscribe(client: paho.Client, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        subscribed.set()

    def on_burst(messages: list[paho.MQTTMessage]) -> None:
        if state["n"] == 0:
            state["first"] = time.perf_counter()
            state["cpu0"] = cpu_seconds()
        if model is not None:
            for msg in messages:
                model.process(msg.topic, msg.payload)
        elif args.mode == "relay":
            for msg in messages:
                body = json.loads(msg.payload)
                high = abs(float(body["value"])) > args.threshold
                was_high = topic_high.get(msg.topic, False)
                topic_high[msg.topic] = high
                if high and not was_high:
                    client.publish("edge-ml/alerts/relay",
                                   json.dumps({"state": "open", "ts": body.get("ts")}), qos=1)
        state["n"] += len(messages)
        state["last"] = time.perf_counter()
        if args.expect and state["n"] >= args.expect:
            done.set()

    # The daemon's own client class and network loop (edge_ml.mqtt.BurstClient on paho's
    # loop_start thread): the same reads per wake-up, messages handed over a burst at a time.
    client = BurstClient(CallbackAPIVersion.VERSION2, client_id=args.client_id,
                         protocol=MQTTProtocolVersion.MQTTv311, clean_session=False,
                         on_burst=on_burst)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.connect(args.host, args.port, keepalive=60)
    started = time.perf_counter()
    client.loop_start()
    samples: list[list[float]] = []
    if args.prepare:
        subscribed.wait(args.seconds)
    else:
        # The main thread wakes on the sampling schedule (or once the last message is in).
        next_sample = started
        while not done.is_set():
            now = time.perf_counter()
            if now >= next_sample:
                samples.append([round(now - started, 4), state["n"]])
                client.publish(f"edge-ml-bench/{args.client_id}/count", str(state["n"]), qos=1)
                next_sample += args.sample_s
            if now - started >= args.seconds:
                break
            done.wait(max(0.0, min(next_sample, started + args.seconds) - now))
    cpu = cpu_seconds() - state["cpu0"] if state["n"] else 0.0
    client.disconnect()
    client.loop_stop()
    seconds = state["last"] - state["first"]
    print(json.dumps({"mode": args.mode, "messages": state["n"], "seconds": round(seconds, 4),
                      "rate": round(state["n"] / seconds, 1) if seconds > 0 else 0.0,
                      "cpu_s": round(cpu, 3), "samples": samples}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Resume/reload vs the alerts table, operator-chosen checkpoints, and train on top of a fleet.

In process, on a real SQLite file, with the real :class:`AlertPublisher` over a link that
records what it would publish. The daemon-level versions are in test_checkpoint_operator.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_ml.checkpoint import Checkpointer, decode, encode
from edge_ml.config import parse_config
from edge_ml.pipeline import Pipeline
from edge_ml.publish import AlertPublisher
from edge_ml.status import status_document
from edge_ml.storage import Storage
from edge_ml.train import train

CONFIG = {"model": {"n_trees": 5, "height": 6, "window_size": 50, "warmup": 20}}
STREAM = "sensors/a"
PAYLOAD_KEYS = {"alert_id", "stream", "state", "score", "value", "ts", "opened_at",
                "resolved_at", "severity"}
T0 = 1_700_000_000.0


class Link:
    """Records publishes instead of sending them."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def publish(self, topic: str, payload: bytes | str, qos: int = 1,
                retain: bool = False) -> None:
        self.sent.append((topic, json.loads(payload)))

    def alerts(self) -> list[dict[str, Any]]:
        return [body for topic, body in self.sent if "/alerts/" in topic]


def _daemon_side(db: Path) -> tuple[Pipeline, Checkpointer, Link, Storage]:
    """What a daemon start builds: pipeline, storage, publisher, and the resume."""
    storage = Storage(db)
    link = Link()
    pipeline = Pipeline(parse_config(CONFIG), storage, AlertPublisher(link, "edge-ml"))
    saver = Checkpointer(pipeline, interval_s=3600, retention=10)
    saver.resume()
    return pipeline, saver, link, storage


def _normal(p: Pipeline, n: int, start: int, stream: str = STREAM) -> Any:
    rng = np.random.default_rng(start)
    return p.process_readings([stream] * n, T0 + start + np.arange(n, dtype=np.float64),
                              np.round(rng.normal(20.0, 1.0, n), 3))


def _spike(p: Pipeline, at: int, stream: str = STREAM) -> str:
    out = p.process_readings([stream], np.array([T0 + at]), np.array([500.0]))
    (event,) = out.events
    assert event.state == "open"
    return event.alert_id


def test_unclean_stop_resolves_the_alert_the_checkpoint_does_not_hold(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    p, saver, _, storage = _daemon_side(db)
    _normal(p, 300, 0)
    saver.save_now("timer")  # the checkpoint is from before the alert
    alert_id = _spike(p, 300)
    p.flush()
    assert [r["alert_id"] for r in storage.alerts(open_only=True)] == [alert_id]
    assert status_document(storage)["open_alerts"] == 1
    storage.close()  # kill -9: no shutdown checkpoint

    p, saver, link, storage = _daemon_side(db)
    assert storage.alerts(open_only=True) == []
    assert status_document(storage)["open_alerts"] == 0
    rows = [r for r in storage.alerts(limit=None) if r["alert_id"] == alert_id]
    assert [(r["state"], r["reason"]) for r in rows] == [("resolved", "restart"), ("open", None)]
    resolved = rows[0]
    assert resolved["value"] is None
    assert resolved["resolved_at"] >= time.time() - 60
    (body,) = link.alerts()
    assert set(body) == PAYLOAD_KEYS  # the documented payload, no extra key
    assert body["state"] == "resolved" and body["alert_id"] == alert_id
    assert body["opened_at"] == T0 + 300 and body["resolved_at"] == resolved["resolved_at"]

    # Live readings do not resolve it a second time, and retention can now delete it.
    assert alert_id not in {e.alert_id for e in _normal(p, 500, 301).events}
    p.flush()
    storage.prune_alerts(time.time() + 1)
    assert [r for r in storage.alerts(limit=None) if r["alert_id"] == alert_id] == []


def test_alert_resolved_after_the_checkpoint_is_closed_in_the_state_quietly(
        tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    p, saver, _, storage = _daemon_side(db)
    _normal(p, 300, 0)
    alert_id = _spike(p, 300)
    saver.save_now("timer")  # holds the alert open
    (event,) = _normal(p, 1, 301).events
    assert event.state == "resolved"
    p.flush()
    storage.close()

    p, saver, link, storage = _daemon_side(db)
    assert p.open_alerts() == 0 and link.alerts() == []
    # no second resolve of the old alert
    assert alert_id not in {e.alert_id for e in _normal(p, 300, 302).events}
    p.flush()
    assert [r["state"] for r in storage.alerts(limit=None) if r["alert_id"] == alert_id] == [
        "resolved", "open"]


def test_an_alert_the_database_never_had_is_dropped_from_restored_state(tmp_path: Path) -> None:
    # A checkpoint made elsewhere (imported, or trained from history) with an alert open.
    offline = Pipeline(parse_config(CONFIG))
    _normal(offline, 300, 0)
    _spike(offline, 300)
    storage = Storage(tmp_path / "state.db")
    encoded = encode(offline.export_state())
    storage.save_checkpoint(encoded.blob, encoded.header, "import", encoded.checksum, 10)
    storage.close()

    p, _, link, storage = _daemon_side(tmp_path / "state.db")
    assert p.readings_total == 301
    assert p.open_alerts() == 0 and link.alerts() == [] and storage.alerts(limit=None) == []
    # The alert is gone from the kernel state too: the next readings resolve nothing.
    assert [e.state for e in _normal(p, 1, 301).events] == []


def test_reload_resolves_an_alert_not_yet_flushed(tmp_path: Path) -> None:
    p, saver, link, storage = _daemon_side(tmp_path / "state.db")
    _normal(p, 300, 0)
    saver.save_now("timer")
    p.flush()
    alert_id = _spike(p, 300)  # published, still pending for the database
    assert alert_id not in {r["alert_id"] for r in storage.alerts(limit=None)}
    saver.request(reload=True)
    saver.tick()
    rows = [r for r in storage.alerts(limit=None) if r["alert_id"] == alert_id]
    assert [(r["state"], r["reason"]) for r in rows] == [("resolved", "reload"), ("open", None)]
    assert [a["state"] for a in link.alerts() if a["alert_id"] == alert_id] == [
        "open", "resolved"]


# -- an operator's checkpoint is not saved over -------------------------------------------------
def _three_saves(tmp_path: Path) -> tuple[Pipeline, Checkpointer, Storage, list[int]]:
    p, saver, _, storage = _daemon_side(tmp_path / "state.db")
    ids = []
    for i in range(3):
        _normal(p, 100, 100 * i)
        ids.append(saver.save_now("timer"))
    _normal(p, 100, 300)
    return p, saver, storage, ids


def test_shutdown_does_not_save_over_a_rollback(tmp_path: Path) -> None:
    _, saver, storage, ids = _three_saves(tmp_path)
    storage.rollback_checkpoint(ids[0])
    assert saver.save_now("shutdown") is None
    assert storage.newest_checkpoint_id() == ids[0]
    assert [r["id"] for r in storage.checkpoints()] == ids[::-1]


def test_timer_tick_loads_a_rollback_then_saves_on_top_of_it(tmp_path: Path) -> None:
    p, saver, storage, ids = _three_saves(tmp_path)
    storage.rollback_checkpoint(ids[1])
    saver.last_started -= 3600  # the timer is due
    saver.tick()
    assert p.readings_total == 200 and saver.current_id == ids[1]
    assert storage.newest_checkpoint_id() == ids[1]
    _normal(p, 50, 200)
    newest = saver.save_now("shutdown")
    assert newest is not None and newest > ids[2]
    assert storage.checkpoints()[0]["readings_total"] == 250


def test_a_save_in_flight_does_not_supersede_an_import(tmp_path: Path) -> None:
    p, saver, storage, ids = _three_saves(tmp_path)
    saver.request()
    saver.tick()  # a snapshot of 400 readings is being encoded
    blob = storage.checkpoint_payload(ids[0])
    imported = storage.save_checkpoint(blob, decode(blob)["header"], "import",
                                       storage.checkpoints()[-1]["checksum"], 10)
    saver._finish(wait=True)
    assert storage.newest_checkpoint_id() == imported
    assert all(r["readings_total"] != 400 for r in storage.checkpoints())
    saver.tick()  # loads the imported one
    assert p.readings_total == 100 and saver.current_id == imported


def test_a_save_request_after_a_rollback_loads_it_first(tmp_path: Path) -> None:
    _, saver, storage, ids = _three_saves(tmp_path)
    storage.rollback_checkpoint(ids[0])
    saver.request()
    saver.tick()  # loads ids[0], then starts the requested save
    saver._finish(wait=True)
    assert storage.checkpoints()[0]["reason"] == "request"
    assert storage.checkpoints()[0]["readings_total"] == 100


# -- train on top of the fleet ---------------------------------------------------------------
def _history(path: Path, n: int = 400, seed: int = 9) -> Path:
    values = np.random.default_rng(seed).normal(60.0, 1.0, n)
    values[n // 2] = 900.0  # opens an alert in the history
    path.write_text("timestamp,value\n" + "".join(
        f"{T0 - 86400 + 60 * i},{v:.4f}\n" for i, v in enumerate(values)))
    return path


def _state_of(document: dict[str, Any], name: str) -> dict[str, np.ndarray]:
    slot = document["state"]["names"].index(name)
    return {f"{part}.{key}": array[slot] for part in ("stats", "features", "detector", "alerts",
                                                      "drift")
            for key, array in document["state"][part].items() if key != "flushed_readings"}


def _assert_same_stream(a: dict[str, Any], b: dict[str, Any], name: str) -> None:
    left, right = _state_of(a, name), _state_of(b, name)
    assert left.keys() == right.keys()
    for key in left:
        np.testing.assert_array_equal(left[key], right[key], err_msg=key)


@pytest.mark.parametrize("trained", ["s6/hist", "s6/t"])
def test_train_adds_or_replaces_one_stream_and_keeps_the_fleet(tmp_path: Path,
                                                               trained: str) -> None:
    p, saver, _, storage = _daemon_side(tmp_path / "state.db")
    for i, name in enumerate(["s6/t", "s6/u"]):
        _normal(p, 300, 1000 * i, name)
    held = _spike(p, 400, "s6/t")
    base_id = saver.save_now("timer")
    base = decode(storage.checkpoint_payload(base_id))

    history = _history(tmp_path / "hist.csv")
    result = train(Pipeline(parse_config(CONFIG)), storage, [history], trained, 10)
    assert (result.base_id, result.trained, result.readings) == (base_id, [trained], 400)
    new = decode(storage.checkpoint_payload(result.checkpoint_id))
    names = new["state"]["names"]
    assert names[:2] == ["s6/t", "s6/u"]  # slots kept
    assert result.streams == len(names) == (3 if trained == "s6/hist" else 2)
    assert new["header"]["readings_total"] == base["header"]["readings_total"] == 601
    assert new["header"]["trained_streams"] == [trained]
    _assert_same_stream(new, base, "s6/u")

    alone = Pipeline(parse_config(CONFIG))  # the trained stream as a fresh pipeline learns it
    from edge_ml.replay import replay_csv

    replay_csv(alone, history, None, trained)
    alone.alerts.close(0)  # history alerts are not live ones
    _assert_same_stream(new, alone.export_state(), trained)
    open_slots = {slot for slot, _, _ in new["state"]["open_alerts"]}
    if trained == "s6/t":
        assert open_slots == set()  # t's state was replaced, alert and all
    else:
        _assert_same_stream(new, base, "s6/t")
        assert [a for _, a, _ in new["state"]["open_alerts"]] == [held]

    # The daemon notices at its next tick, loads it and resolves what it no longer holds.
    saver.last_started -= 3600
    saver.tick()
    assert saver.current_id == result.checkpoint_id and p.readings_total == 601
    assert not p.streams.stats.last_warming[p.streams.slot_of["s6/u"]]
    still_open = [r["alert_id"] for r in storage.alerts(open_only=True)]
    assert still_open == ([] if trained == "s6/t" else [held])


def test_train_without_a_checkpoint_starts_empty_and_skips_without_rejecting(
        tmp_path: Path) -> None:
    storage = Storage(tmp_path / "state.db")
    history = _history(tmp_path / "boiler.csv")
    first = train(Pipeline(parse_config(CONFIG)), storage, [history], None, 10)
    assert (first.base_id, first.trained, first.streams) == (None, ["boiler"], 1)
    assert decode(storage.checkpoint_payload(first.checkpoint_id))["header"][
        "readings_total"] == 0
    # A config with other model parameters cannot use it: skipped, not marked rejected (it may
    # be the daemon's), and the result holds only what was trained.
    other = parse_config({"model": {**CONFIG["model"], "n_trees": 7}})
    second = train(Pipeline(other), storage, [history], "x", 10)
    assert (second.base_id, second.streams) == (None, 1)
    assert status_document(storage)["checkpoints_rejected"] == []

"""A pipeline's state (edge_ml.state): export/restore, the alerts after a restore, grafting.

In process; the alert and train tests on a real SQLite file, with the real
:class:`AlertPublisher` over a link that records what it would publish. The daemon-level
versions are in test_checkpointer_operator.py.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pipeline_helpers import (
    ALERT_CONFIG,
    CONFIG,
    T0,
    daemon_side,
    make_pipeline,
    normal,
    readings,
    spike,
)

from edge_ml.checkpoint_format import decode, encode
from edge_ml.config import parse_config
from edge_ml.errors import CheckpointError
from edge_ml.pipeline import Pipeline
from edge_ml.state import compatibility, export_state, restore_state
from edge_ml.status import status_document
from edge_ml.storage import Storage
from edge_ml.train import train

PAYLOAD_KEYS = {"alert_id", "stream", "state", "score", "value", "ts", "opened_at",
                "resolved_at", "severity", "view", "fields", "expected"}


# -- export and restore ----------------------------------------------------------------------
def test_resume_scores_exactly_as_uninterrupted() -> None:
    first = readings(1500, seed=1)
    later = readings(2000, seed=2, start=1500.0)
    uninterrupted = make_pipeline()
    uninterrupted.process_readings(*first)
    blob = encode(export_state(uninterrupted)).blob
    expected = uninterrupted.process_readings(*later)

    restored = make_pipeline()
    restore_state(restored, decode(blob, compatibility(restored)))
    got = restored.process_readings(*later)
    np.testing.assert_array_equal(got.levels, expected.levels)
    np.testing.assert_array_equal(got.raw, expected.raw)
    np.testing.assert_array_equal(got.codes, expected.codes)
    def key(events):
        return [(e.stream, e.state, e.ts, e.opened_at, e.score) for e in events]

    assert key(got.events) == key(expected.events)
    assert restored.readings_total == uninterrupted.readings_total == 3500


@pytest.mark.parametrize("version", [1, 2, 3])
def test_an_older_schema_checkpoint_is_upgraded_not_thrown_away(version: int) -> None:
    """A checkpoint written before the persistent view (1), the first-reading time (2) or the
    discrete floors (3) keeps its streams' trees, profiles and counters; the state added since
    starts neutral."""
    trained = make_pipeline()
    trained.process_readings(*readings(1500, seed=1))
    document = export_state(trained)
    document["header"]["schema_version"] = version
    added = {1: ("persist", "first_ts", "discrete"), 2: ("first_ts", "discrete"),
             3: ("discrete",)}
    for name in added[version]:
        del document["state"]["detector"][name]
    restored = make_pipeline()
    restore_state(restored, decode(encode(document).blob, compatibility(restored)))
    assert restored.readings_total == 1500
    np.testing.assert_array_equal(restored.detector.forest.mass[:3],
                                  trained.detector.forest.mass[:3])
    state = restored.detector.state
    assert not state.discrete[0].any()
    if version < 3:  # taken from the stream statistics
        assert state.first_ts[0] == restored.streams.stats.first_ts[0] == 0.0
    if version == 1:
        assert not state.persist[0].any()
    else:
        np.testing.assert_array_equal(state.persist[0], trained.detector.state.persist[0])
    later = readings(500, seed=2, start=1500.0)
    expected = trained.process_readings(*later)
    result = restored.process_readings(*later)
    assert not result.warming.any()  # past its warm-up: still scored at once
    if version >= 2:  # the discrete floors matter only to a discrete stream (these are
        # continuous)
        np.testing.assert_array_equal(result.levels, expected.levels)
    else:  # the persistent view learns again; the spikes are found as before
        np.testing.assert_array_equal(result.levels >= 0.5, expected.levels >= 0.5)
    fresh = make_pipeline()
    with pytest.raises(CheckpointError, match="missing arrays"):  # only what was added since
        del document["state"]["detector"]["cal_n"]
        restore_state(fresh, decode(encode(document).blob, compatibility(fresh)))


def test_a_schema_8_checkpoint_keeps_its_drift_state_without_the_means_spread() -> None:
    """Schema 9 added the drift reference's block-mean spread: a schema-8 checkpoint loads
    with zeros there (the within-block scale alone, as that build had), the rest as saved."""
    trained = make_pipeline()
    trained.process_readings(*readings(3000, seed=1))
    document = export_state(trained)
    document["header"]["schema_version"] = 8
    for name in ("ref_mean", "ref_mean_m2"):
        del document["state"]["drift"][name]
    restored = make_pipeline()
    restore_state(restored, decode(encode(document).blob, compatibility(restored)))
    drift = restored.drift.state
    assert not drift.ref_mean.any() and not drift.ref_mean_m2.any()
    assert drift.ref_blocks[0] == trained.drift.state.ref_blocks[0] > 0
    np.testing.assert_array_equal(drift.ph_inc[:3], trained.drift.state.ph_inc[:3])
    fresh = make_pipeline()
    document["header"]["schema_version"] = 9  # a current checkpoint must have them
    with pytest.raises(CheckpointError, match="missing arrays"):
        restore_state(fresh, decode(encode(document).blob, compatibility(fresh)))


@pytest.mark.parametrize("name, version", [("shoulder", 11), ("runs", 13)])
def test_a_checkpoint_from_before_an_array_resumes_exactly_without_it(name: str,
                                                                       version: int) -> None:
    """Schema 12 added each stream's shoulder (kernels.calibration), schema 14 its runs of equal
    readings (kernels.runs): a checkpoint from before loads with zeros there, learns them again
    and scores exactly as the uninterrupted pipeline (the shoulder scales nothing at the shipped
    ``heavy_tail_floor``; these readings never repeat, and a restored stream scores no run
    before 100 changes of value anyway); a current one must have it."""
    trained = make_pipeline()
    trained.process_readings(*readings(3000, seed=1))
    assert getattr(trained.detector.state, name)[0].any()  # it learned
    document = export_state(trained)
    document["header"]["schema_version"] = version
    del document["state"]["detector"][name]
    restored = make_pipeline()
    restore_state(restored, decode(encode(document).blob, compatibility(restored)))
    assert not getattr(restored.detector.state, name).any()
    later = readings(500, seed=2, start=3000.0)
    np.testing.assert_array_equal(restored.process_readings(*later).levels,
                                  trained.process_readings(*later).levels)
    assert getattr(restored.detector.state, name)[0].any()  # learned again
    fresh = make_pipeline()
    document["header"]["schema_version"] = version + 1
    with pytest.raises(CheckpointError, match="missing arrays"):
        restore_state(fresh, decode(encode(document).blob, compatibility(fresh)))


def test_a_schema_12_checkpoint_takes_each_streams_age_from_its_statistics() -> None:
    """Schema 13 added each stream's age in readings (with its first reading's time, the
    sampling interval a fast stream's profile learns by): a schema-12 checkpoint takes it from
    the stream statistics and scores a 20 Hz fleet exactly as the uninterrupted pipeline."""
    names, ts, values = readings(6000, seed=1)
    fast = ts / 60.0  # three streams, each read every 0.05 s
    trained = make_pipeline()
    trained.process_readings(names, fast, values)
    ages = trained.detector.state.age_readings[:3].copy()
    assert ages.tolist() == [2000.0] * 3
    document = export_state(trained)
    document["header"]["schema_version"] = 12
    del document["state"]["detector"]["age_readings"]
    restored = make_pipeline()
    restore_state(restored, decode(encode(document).blob, compatibility(restored)))
    np.testing.assert_array_equal(restored.detector.state.age_readings[:3], ages)
    later_names, later_ts, later_values = readings(600, seed=2, start=6000.0)
    np.testing.assert_array_equal(
        restored.process_readings(later_names, later_ts / 60.0, later_values).levels,
        trained.process_readings(later_names, later_ts / 60.0, later_values).levels)


def test_a_checkpoint_loads_under_another_heavy_tail_floor() -> None:
    """The floor is how a stream is scored, not what it learned: a state saved at the shipped
    floor resumes at another, its shoulder as saved."""
    trained = make_pipeline()
    trained.process_readings(*readings(2000, seed=4))
    quiet = make_pipeline(heavy_tail_floor=0.5)
    blob = encode(export_state(trained)).blob
    restore_state(quiet, decode(blob, compatibility(quiet)))
    np.testing.assert_array_equal(quiet.detector.state.shoulder[:3],
                                  trained.detector.state.shoulder[:3])
    assert quiet.params.heavy_tail_floor == 0.5


def test_empty_pipeline_round_trips() -> None:
    p = make_pipeline()
    q = make_pipeline()
    restore_state(q, decode(encode(export_state(p)).blob))
    assert len(q.streams) == 0


def test_restore_of_mismatched_arrays_leaves_state_untouched() -> None:
    p = make_pipeline()
    p.process_readings(*readings(300))
    document = export_state(p)
    del document["state"]["features"]["prof_mean"]
    q = make_pipeline()
    q.process_readings(*readings(10))
    with pytest.raises(CheckpointError, match="does not fit"):
        restore_state(q, document)
    assert q.readings_total == 10


def test_config_change_of_alert_settings_still_resumes() -> None:
    p = make_pipeline()
    p.process_readings(*readings(300))
    blob = encode(export_state(p)).blob
    config = parse_config(CONFIG)
    config = dataclasses.replace(config, alerts=dataclasses.replace(config.alerts, debounce=5))
    q = Pipeline(config)
    restore_state(q, decode(blob, compatibility(q)))
    assert q.readings_total == 300


# -- the alerts table after a restore (reconcile_alerts) ---------------------------------------
def test_unclean_stop_resolves_the_alert_the_checkpoint_does_not_hold(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    p, saver, _, storage = daemon_side(db)
    normal(p, 300, 0)
    saver.save_now("timer")  # the checkpoint is from before the alert
    alert_id = spike(p, 300)
    p.flush()
    assert [r["alert_id"] for r in storage.alerts(open_only=True)] == [alert_id]
    assert status_document(storage)["open_alerts"] == 1
    storage.close()  # kill -9: no shutdown checkpoint

    p, saver, link, storage = daemon_side(db)
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
    # The resolve at restart still says why its open opened (taken from the stored open row).
    assert body["view"] == rows[1]["view"] == resolved["view"] == "seasonal"
    assert body["fields"] == resolved["fields"] == {body["stream"]: 1.0}
    assert body["opened_at"] == T0 + 300 and body["resolved_at"] == resolved["resolved_at"]

    # Live readings do not resolve it a second time, and retention can now delete it.
    assert alert_id not in {e.alert_id for e in normal(p, 500, 301).events}
    p.flush()
    storage.prune_alerts(time.time() + 1)
    assert [r for r in storage.alerts(limit=None) if r["alert_id"] == alert_id] == []


def test_alert_resolved_after_the_checkpoint_is_closed_in_the_state_quietly(
        tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    p, saver, _, storage = daemon_side(db)
    normal(p, 300, 0)
    alert_id = spike(p, 300)
    saver.save_now("timer")  # holds the alert open
    (event,) = normal(p, 1, 301).events
    assert event.state == "resolved"
    p.flush()
    storage.close()

    p, saver, link, storage = daemon_side(db)
    assert p.open_alert_count() == 0 and link.alerts() == []
    # no second resolve of the old alert
    assert alert_id not in {e.alert_id for e in normal(p, 300, 302).events}
    p.flush()
    assert [r["state"] for r in storage.alerts(limit=None) if r["alert_id"] == alert_id] == [
        "resolved", "open"]


def test_an_alert_the_database_never_had_is_dropped_from_restored_state(tmp_path: Path) -> None:
    # A checkpoint made elsewhere (imported, or trained from history) with an alert open.
    offline = Pipeline(parse_config(ALERT_CONFIG))
    normal(offline, 300, 0)
    spike(offline, 300)
    storage = Storage(tmp_path / "state.db")
    encoded = encode(export_state(offline))
    storage.save_checkpoint(encoded.blob, encoded.header, "import", encoded.checksum, 10)
    storage.close()

    p, _, link, storage = daemon_side(tmp_path / "state.db")
    assert p.readings_total == 301
    assert p.open_alert_count() == 0 and link.alerts() == [] and storage.alerts(limit=None) == []
    # The alert is gone from the kernel state too: the next readings resolve nothing.
    assert [e.state for e in normal(p, 1, 301).events] == []


def test_reload_resolves_an_alert_not_yet_flushed(tmp_path: Path) -> None:
    p, saver, link, storage = daemon_side(tmp_path / "state.db")
    normal(p, 300, 0)
    saver.save_now("timer")
    p.flush()
    # An operator chooses this state again (as `checkpoints import` would): a SIGHUP with
    # nothing new chosen keeps the live state instead (test_reload_with_nothing_new_...).
    encoded = encode(export_state(p))
    storage.save_checkpoint(encoded.blob, encoded.header, "import", encoded.checksum, 10)
    alert_id = spike(p, 300)  # published, still pending for the database
    assert alert_id not in {r["alert_id"] for r in storage.alerts(limit=None)}
    saver.request(reload=True)
    saver.tick()
    rows = [r for r in storage.alerts(limit=None) if r["alert_id"] == alert_id]
    assert [(r["state"], r["reason"]) for r in rows] == [("resolved", "reload"), ("open", None)]
    assert [a["state"] for a in link.alerts() if a["alert_id"] == alert_id] == [
        "open", "resolved"]


def test_reload_with_nothing_new_chosen_keeps_the_live_state(tmp_path: Path) -> None:
    p, saver, _, _ = daemon_side(tmp_path / "state.db")
    normal(p, 10, 0)
    saver.save_now("timer")
    normal(p, 300, 10)
    p.process_messages([("sensors/a", b"bad", T0)])
    before = (p.readings_total, p.rejects_total)
    learned = int(p.streams.stats.readings[0])
    saver.request(reload=True)
    saver.tick()
    assert (p.readings_total, p.rejects_total) == before == (310, 1)
    assert (p.readings_seen, p.rejects_seen) == (310, 1)
    assert int(p.streams.stats.readings[0]) == learned == 310  # not rewound to 10


def test_reload_of_a_chosen_checkpoint_keeps_the_counters_going_up(tmp_path: Path) -> None:
    p, saver, _, storage = daemon_side(tmp_path / "state.db")
    normal(p, 10, 0)
    first = saver.save_now("timer")
    normal(p, 300, 10)
    assert first is not None
    saver.save_now("timer")
    storage.rollback_checkpoint(first)  # an operator goes back to 10 readings
    saver.request(reload=True)
    saver.tick()
    assert p.readings_total == int(p.streams.stats.readings[0]) == 10  # the chosen state...
    assert p.readings_seen == 310  # ...and the process's counter does not go backwards
    normal(p, 5, 310)
    assert (p.readings_seen, p.readings_total) == (315, 15)


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
    p, saver, _, storage = daemon_side(tmp_path / "state.db")
    for i, name in enumerate(["s6/t", "s6/u"]):
        normal(p, 300, 1000 * i, name)
    held = spike(p, 400, "s6/t")
    base_id = saver.save_now("timer")
    base = decode(storage.checkpoint_payload(base_id))

    history = _history(tmp_path / "hist.csv")
    result = train(Pipeline(parse_config(ALERT_CONFIG)), storage, [history], trained, 10)
    assert (result.base_id, result.trained, result.readings) == (base_id, [trained], 400)
    new = decode(storage.checkpoint_payload(result.checkpoint_id))
    names = new["state"]["names"]
    assert names[:2] == ["s6/t", "s6/u"]  # slots kept
    assert result.streams == len(names) == (3 if trained == "s6/hist" else 2)
    assert new["header"]["readings_total"] == base["header"]["readings_total"] == 601
    assert new["header"]["trained_streams"] == [trained]
    _assert_same_stream(new, base, "s6/u")

    alone = Pipeline(parse_config(ALERT_CONFIG))  # the trained stream as a fresh pipeline learns it
    from edge_ml.replay import replay_csv

    replay_csv(alone, history, None, trained)
    alone.alerts.close(0)  # history alerts are not live ones
    _assert_same_stream(new, export_state(alone), trained)
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
    first = train(Pipeline(parse_config(ALERT_CONFIG)), storage, [history], None, 10)
    assert (first.base_id, first.trained, first.streams) == (None, ["boiler"], 1)
    assert decode(storage.checkpoint_payload(first.checkpoint_id))["header"][
        "readings_total"] == 0
    # A config with other model parameters cannot use it: skipped, not marked rejected (it may
    # be the daemon's), and the result holds only what was trained.
    other = parse_config({"model": {**ALERT_CONFIG["model"], "n_trees": 7}})
    second = train(Pipeline(other), storage, [history], "x", 10)
    assert (second.base_id, second.streams) == (None, 1)
    assert status_document(storage)["checkpoints_rejected"] == []


def test_train_grafts_a_device_learned_from_history_beside_the_fleets_own(
        tmp_path: Path) -> None:
    # A multi-column history file is learned as one device (as replay reads it); the graft
    # kept only the fleet's devices, so the trained joint model was thrown away.
    storage = Storage(tmp_path / "state.db")
    fleet = Pipeline(parse_config(ALERT_CONFIG))
    rng = np.random.default_rng(5)
    n = 400
    ts = T0 + 60.0 * np.arange(n)
    load = rng.normal(0.0, 1.0, n)
    fleet.process_readings(["rig/a/x"] * n + ["rig/a/y"] * n, np.concatenate([ts, ts]),
                           np.concatenate([load, 2.0 * load + rng.normal(0, 0.1, n)]),
                           {"rig/a/x": "rig/a", "rig/a/y": "rig/a"})
    encoded = encode(export_state(fleet))
    storage.save_checkpoint(encoded.blob, encoded.header, "timer", encoded.checksum, 10)

    history = tmp_path / "pump.csv"
    flow = 50.0 + 5.0 * rng.normal(0.0, 1.0, n)
    lines = ["timestamp,flow,current"] + [
        f"{T0 + 60.0 * i:.0f},{f:.4f},{0.2 * f + rng.normal(0, 0.05):.4f}"
        for i, f in enumerate(flow)]
    history.write_text("\n".join(lines) + "\n")
    result = train(Pipeline(parse_config(ALERT_CONFIG)), storage, [history], None, 10)

    new = decode(storage.checkpoint_payload(result.checkpoint_id))
    devices = new["state"]["devices"]
    assert devices["names"] == ["rig/a", "pump"]
    alone = Pipeline(parse_config(ALERT_CONFIG))
    from edge_ml.replay import replay_csv

    replay_csv(alone, history, None, None)
    learned = alone.devices.export()
    assert learned["names"] == ["pump"] and devices["fields"][1] == learned["fields"][0]
    for key, array in learned["arrays"].items():
        np.testing.assert_array_equal(devices["arrays"][key][1], array[0], err_msg=key)
        np.testing.assert_array_equal(devices["arrays"][key][0],
                                      fleet.devices.export()["arrays"][key][0], err_msg=key)
    resumed = Pipeline(parse_config(ALERT_CONFIG))
    restore_state(resumed, new)
    assert resumed.devices.names == ["rig/a", "pump"]
    for stream in devices["fields"][1]:  # each trained field is mapped to its device
        assert resumed.devices.slot_device[resumed.streams.slot_of[stream]] == 1

"""The joint view of a device (edge_ml.kernels.joint) against a plain NumPy reference."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from daemon_helpers import DaemonProcess, Observer, wait_for
from naive_hst import NaiveForest
from scipy.stats import chi2

from edge_ml.config import parse_config
from edge_ml.devices import Devices, pattern_device
from edge_ml.kernels.calibration import probability_level
from edge_ml.kernels.device_forest import (
    JOINT_HEIGHT,
    JOINT_WINDOW,
    SCALE_ALPHA,
    SCALE_SQUASH,
    device_trees,
)
from edge_ml.kernels.joint import (
    CHRONIC_ALPHA,
    CHRONIC_OFF,
    CHRONIC_ON,
    DEV_MULT,
    EVIDENCE_CAP,
    EVIDENCE_DRIFT,
    EVIDENCE_ROW_CAP,
    HOLD_EVIDENCE,
    HOLD_WEIGHT,
    IMPUTE_Z,
    JOINT_ALPHA,
    JOINT_WARMUP,
    LEARN_CLIP,
    Q90_STEP,
    RDEV_ALPHA,
    RDEV_START,
    RIDGE,
    chi2_sf,
    invert,
)
from edge_ml.localbroker import LocalBroker
from edge_ml.pipeline import Pipeline
from edge_ml.replay import replay_csv

pytestmark = pytest.mark.kernels


def reference(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Levels and conditional residuals of complete rows, with np.linalg.inv and SciPy's
    chi-squared distribution for the sustained evidence."""
    n, k = rows.shape
    mean, cov, rdev = np.zeros(k), np.zeros((k, k)), np.zeros(k)
    evidence, q90, chronic, unfit = 0.0, 0.0, 0.0, False
    levels, resids = np.zeros(n), np.zeros((n, k))
    for t, x in enumerate(rows):
        sd = np.sqrt(np.maximum(np.diag(cov), 0.0)) + 1e-9 * (np.abs(mean) + 1.0)
        z = (x - mean) / sd
        corr = cov / np.outer(sd, sd)
        np.fill_diagonal(corr, 1.0 + RIDGE)
        prec = np.linalg.inv(corr)
        resid = prec @ z / np.sqrt(np.diag(prec))
        d2 = float(z @ prec @ z)
        predicted = mean + sd * (z - prec @ z / np.diag(prec))
        weight, mean_weight, learned = 1.0, None, x
        if t >= JOINT_WARMUP:
            top = np.max(np.abs(resid) / np.maximum(DEV_MULT * rdev, 1e-6))
            instant = probability_level(min(1.0, k * math.erfc(top / math.sqrt(2.0))))
            weight = min(1.0, (LEARN_CLIP / top) ** 2)
            scaled = d2 * chi2.ppf(0.9, k) / math.exp(q90)
            q = min(EVIDENCE_ROW_CAP, -math.log10(chi2.sf(scaled, k) + 1e-10))
            evidence = min(EVIDENCE_CAP, max(0.0, evidence + q - EVIDENCE_DRIFT))
            chronic += CHRONIC_ALPHA * ((evidence >= HOLD_EVIDENCE) - chronic)
            unfit = chronic >= CHRONIC_OFF or (unfit and chronic >= CHRONIC_ON)
            if unfit:
                evidence = 0.0
            elif evidence >= HOLD_EVIDENCE:
                weight, mean_weight = min(weight, HOLD_WEIGHT), 1.0
                off = np.abs(resid) >= IMPUTE_Z * np.maximum(DEV_MULT * rdev, 1e-6)
                learned = np.where(off, predicted, x)
            levels[t] = max(instant, evidence / 10.0)
        resids[t] = resid
        if t >= RDEV_START:  # Robbins-Monro towards the 90th percentile of log d2
            if t == RDEV_START:
                q90 = math.log(chi2.ppf(0.9, k))
            step = (HOLD_WEIGHT if evidence >= HOLD_EVIDENCE else 1.0) * max(
                Q90_STEP, 1.0 / math.sqrt(t - RDEV_START + 1.0))
            q90 += step * ((math.log(max(d2, 1e-300)) > q90) - 0.1)
        a = weight * max(JOINT_ALPHA, 1.0 / (t + 1.0))
        am = (weight if mean_weight is None else mean_weight) * max(JOINT_ALPHA, 1.0 / (t + 1.0))
        delta = learned - mean
        mean = mean + am * delta
        cov = (1.0 - a) * (cov + a * np.outer(delta, delta))
        if t >= RDEV_START:
            rdev += weight * max(RDEV_ALPHA, 1.0 / (t - RDEV_START + 1.0)) * (np.abs(resid) - rdev)
    return levels, resids


def pump(n: int, seed: int = 0) -> np.ndarray:
    """current ~ flow ~ pressure with a daily load cycle and noise."""
    rng = np.random.default_rng(seed)
    load = 0.5 + 0.4 * np.sin(np.arange(n) * 2 * np.pi / 288) + rng.normal(0, 0.05, n)
    flow = 10 * load + rng.normal(0, 0.2, n)
    current = 2 + 6 * load + rng.normal(0, 0.15, n)
    pressure = 1 + 3 * load + rng.normal(0, 0.1, n)
    return np.column_stack([current, flow, pressure])


def _device(k: int) -> tuple[Devices, list[str]]:
    devices = Devices()
    names = [f"sensors/pump/{c}" for c in ("current", "flow", "pressure")[:k]]
    slots = np.arange(k, dtype=np.int64)
    devices.assign(names, slots, dict.fromkeys(names, "sensors/pump"), names)
    return devices, names


def test_the_kernel_matches_the_numpy_reference() -> None:
    rows = pump(600)
    devices, _ = _device(3)
    slots = np.tile(np.arange(3, dtype=np.int64), len(rows))
    ts = np.repeat(np.arange(len(rows), dtype=np.float64) * 300, 3)
    out = devices.process(slots, rows.reshape(-1), ts)
    scored = np.flatnonzero(out.device == 0)
    assert scored.tolist() == list(range(2, 3 * len(rows), 3))  # at each row's last field
    want_levels, want_resid = reference(rows)
    np.testing.assert_allclose(out.level[scored], want_levels, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out.resid[scored, :3], want_resid, rtol=1e-7, atol=1e-9)


def forest_reference(rows: np.ndarray) -> np.ndarray:
    """The device forest's raw scores, by the pure-Python forest over NumPy-scaled rows."""
    n, k = rows.shape
    feature, threshold = device_trees(k)
    forest = NaiveForest(feature, threshold, JOINT_HEIGHT, JOINT_WINDOW)
    mean, dev = np.zeros(k), np.zeros(k)
    scores = np.zeros(n)
    for t, x in enumerate(rows):
        scaled = np.full(k, 0.5)
        if t >= 2:
            floor = 1e-6 * (np.abs(mean) + 1.0)
            scaled = 0.5 + 0.5 * np.tanh((x - mean) / np.maximum(DEV_MULT * dev, floor)
                                         / SCALE_SQUASH)
        scores[t] = forest.score(scaled.tolist())
        forest.learn(scaled.tolist())
        delta = x - mean
        mean = mean + max(SCALE_ALPHA, 1.0 / (t + 1.0)) * delta
        if t > 0:
            dev = dev + max(SCALE_ALPHA, 1.0 / t) * (np.abs(delta) - dev)
    return scores


def test_the_device_forest_matches_the_pure_python_one() -> None:
    rows = pump(700, seed=2)
    devices, _ = _device(3)
    slots = np.tile(np.arange(3, dtype=np.int64), len(rows))
    out = devices.process(slots, rows.reshape(-1), np.repeat(np.arange(700.0) * 300, 3))
    scores = out.score[out.device == 0]
    assert (scores[:JOINT_WINDOW] == 0).all() and (scores[JOINT_WINDOW:] > 0).all()
    np.testing.assert_allclose(scores, forest_reference(rows), rtol=0, atol=1e-12)


def test_the_device_score_ranks_rows_in_rare_regions_of_the_joint_distribution() -> None:
    """Shuttle-like: a few clusters of normal operation, and rare rows between them, near the
    fields' overall means, which the Gaussian residuals take for the most ordinary rows."""
    rng = np.random.default_rng(5)
    n = 4000
    centers = 3.0 * np.array([[0.0, 0.0, 0.0, 0.0], [4.0, 4.0, 0.0, 1.0], [0.0, 4.0, 4.0, 2.0]])
    rows = centers[rng.integers(0, 3, n)] + rng.normal(0, 0.3, (n, 4))
    rare = np.zeros(n, dtype=bool)
    rare[rng.choice(np.arange(600, n), 60, replace=False)] = True
    rows[rare] = centers.mean(axis=0) + rng.normal(0, 0.3, (rare.sum(), 4))
    names = [f"m/f{j}" for j in range(4)]
    devices = Devices()
    devices.assign(names, np.arange(4, dtype=np.int64), dict.fromkeys(names, "m"), names)
    out = devices.process(np.tile(np.arange(4, dtype=np.int64), n), rows.reshape(-1),
                          np.repeat(np.arange(float(n)), 4))
    scored = out.device == 0
    label = rare[600:]

    def auc(score: np.ndarray) -> float:  # Mann-Whitney, over the rows after the warm-up
        order = np.argsort(score[600:], kind="stable")
        ranks = np.empty(len(order))
        ranks[order] = np.arange(1, len(order) + 1)
        pos, neg = label.sum(), (~label).sum()
        return float((ranks[label].sum() - pos * (pos + 1) / 2) / (pos * neg))

    gaussian = np.abs(out.resid[scored, :4]).max(axis=1)
    assert auc(out.score[scored]) >= 0.95
    assert auc(gaussian) < 0.5


def test_chi2_sf_is_scipys() -> None:
    for k in (1, 2, 3, 8, 9, 16):
        for x in (0.0, 0.5, 3.0, 10.0, 40.0, 200.0):
            assert chi2_sf(x, k) == pytest.approx(chi2.sf(x, k), rel=1e-9, abs=1e-300)


def long_fault(n: int = 1200, seed: int = 6) -> tuple[np.ndarray, slice]:
    """A pump at one row a second whose flow reads low for 400 rows (a closing valve), each
    field inside its own range; the load wanders slowly."""
    rng = np.random.default_rng(seed)
    slow = np.zeros(n)
    for t in range(1, n):
        slow[t] = 0.995 * slow[t - 1] + rng.normal(0, 0.014)
    load = 0.5 + slow + rng.normal(0, 0.03, n)
    rows = np.column_stack([2 + 6 * load + rng.normal(0, 0.15, n),
                            10 * load + rng.normal(0, 0.25, n),
                            1 + 3 * load + rng.normal(0, 0.1, n)])
    fault = slice(600, 1000)
    rows[fault, 1] -= 10 * 0.12  # as at a load 0.12 lower: inside flow's own range
    return rows, fault


def test_the_kernel_matches_the_numpy_reference_through_a_long_fault() -> None:
    rows, fault = long_fault()
    devices, _ = _device(3)
    slots = np.tile(np.arange(3, dtype=np.int64), len(rows))
    out = devices.process(slots, rows.reshape(-1), np.repeat(np.arange(float(len(rows))), 3))
    want_levels, _ = reference(rows)
    got = out.level[out.device == 0]
    np.testing.assert_allclose(got, want_levels, rtol=1e-9, atol=1e-12)
    # The evidence holds the level up through the fault and lets it go after it.
    assert (got[fault.start + 30:fault.stop] >= 0.4).mean() > 0.95
    assert (got[fault.stop + 30:] < 0.4).all()


def test_a_broken_relationship_inside_each_usual_range_is_found() -> None:
    rows = pump(3000, seed=1)
    fault = slice(2500, 2510)
    # Clogged impeller: current up, flow down, each well inside its own daily range.
    rows[fault, 0] = 2 + 6 * 0.6
    rows[fault, 1] = 10 * 0.4
    rows[fault, 2] = 1 + 3 * 0.5
    devices, _ = _device(3)
    slots = np.tile(np.arange(3, dtype=np.int64), len(rows))
    out = devices.process(slots, rows.reshape(-1), np.repeat(np.arange(3000.0) * 300, 3))
    levels = out.level[out.device == 0]
    assert levels[fault].min() >= 0.5  # every faulty row over the default threshold
    assert (levels[JOINT_WARMUP:2500] >= 0.5).mean() < 0.002  # rarely on normal rows
    i = np.flatnonzero(out.device == 0)[2505]
    why = devices.explanation(0, out.resid[i], int(out.worst[i]), out.expected[i])
    assert why[0] == "joint" and set(why[1]) <= {"sensors/pump/current", "sensors/pump/flow",
                                                 "sensors/pump/pressure"}
    assert abs(sum(why[1].values()) - 1.0) < 0.2


def test_missing_and_slow_fields_wait_for_a_complete_row() -> None:
    devices, _ = _device(2)
    # field 0 three times, then field 1 once: one row, at field 1, with field 0's last value
    slots = np.array([0, 0, 0, 1, 0, 1], dtype=np.int64)
    values = np.array([1.0, 2.0, 3.0, 10.0, 4.0, 11.0])
    ts = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    out = devices.process(slots, values, ts)
    assert out.device.tolist() == [-1, -1, -1, 0, -1, 0]
    assert devices.state.last[0, :2].tolist() == [4.0, 11.0]
    # A value older than stale_s does not complete a row.
    devices.stale_s = 10.0
    out = devices.process(np.array([0, 1], np.int64), np.array([5.0, 12.0]),
                          np.array([6.0, 100.0]))
    assert out.device.tolist() == [-1, -1]


def test_invert_is_the_inverse() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(size=(5, 5))
    a = a @ a.T + 5 * np.eye(5)
    out, work = np.empty((5, 5)), np.empty((5, 5))
    invert(a, out, work)
    np.testing.assert_allclose(out, np.linalg.inv(a), rtol=1e-10, atol=1e-12)


def test_patterns_group_streams_of_several_topics_even_across_batches() -> None:
    assert pattern_device("sensors/pump1/+", "sensors/pump1/flow") == "sensors/pump1"
    assert pattern_device("sensors/pump1/+", "sensors/pump1/flow/x") is None
    devices = Devices(["sensors/+/+"])
    names = ["sensors/pump1/flow", "sensors/other", "sensors/pump1/current"]
    # one field per batch (separate topics): the device forms once its second field is held
    assert devices.assign(names[:1], np.arange(1, dtype=np.int64), {}, names[:1]) == []
    created = devices.assign(names[1:], np.arange(1, 3, dtype=np.int64), {}, names)
    assert created == ["sensors/pump1/joint"]
    assert devices.fields == [["sensors/pump1/flow", "sensors/pump1/current"]]


def test_device_patterns_are_validated_with_their_key() -> None:
    import pytest

    from edge_ml.config import parse_config
    from edge_ml.errors import ConfigError

    assert parse_config({"devices": {"patterns": ["sensors/+/+"]}}).devices.patterns
    for bad in ("sensors/pump1", "+/x", "a/#/b"):
        with pytest.raises(ConfigError, match=r"devices\.patterns\[0\]"):
            parse_config({"devices": {"patterns": [bad]}})


def test_device_state_survives_a_checkpoint() -> None:
    import json

    from edge_ml.checkpoint_format import decode, encode
    from edge_ml.config import parse_config
    from edge_ml.pipeline import Pipeline
    from edge_ml.state import export_state, restore_state

    rows = pump(400, seed=3)
    messages = [("sensors/pump", json.dumps({"current": c, "flow": f, "pressure": p,
                                             "ts": 1.7e9 + 300 * i}).encode(), 0.0)
                for i, (c, f, p) in enumerate(rows.tolist())]
    whole = Pipeline(parse_config({}))
    for m in messages[:250]:
        whole.process_messages([m])
    first = Pipeline(parse_config({}))
    for m in messages[:250]:
        first.process_messages([m])
    second = Pipeline(parse_config({}))
    restore_state(second, decode(encode(export_state(first)).blob))
    assert second.devices.fields == [[f"sensors/pump/{c}" for c in ("current", "flow",
                                                                     "pressure")]]
    for m in messages[250:]:
        a, b = whole.process_messages([m]), second.process_messages([m])
        assert a is not None and b is not None and a.joint is not None and b.joint is not None
        assert a.joint.level.tolist() == b.joint.level.tolist()
        assert a.joint.score.tolist() == b.joint.score.tolist()  # the forest resumed too
    assert second.devices.state.rows[0] == 400
    assert (second.devices.state.first_window[0], second.devices.state.forest_k[0]) == (0, 3)


def test_a_checkpoint_from_before_the_device_forest_still_loads() -> None:
    """Eight-field arrays and no forest (the format before MAX_DEVICE_FIELDS was 16): the
    Gaussian state comes back, the forest grows anew."""
    rows = pump(300, seed=4)
    devices, names = _device(3)
    slots = np.tile(np.arange(3, dtype=np.int64), len(rows))
    devices.process(slots, rows.reshape(-1), np.repeat(np.arange(300.0) * 300, 3))
    data = devices.export()
    arrays = data["arrays"]
    old = {}
    for key in ("n_fields", "last", "last_ts", "fresh", "mean", "cov", "rows", "rdev"):
        a = arrays[f"devices.{key}"]
        old[f"devices.{key}"] = a[(slice(None), *(slice(0, 8) for _ in a.shape[1:]))]
    restored = Devices()
    restored.restore({**data, "arrays": old}, {name: i for i, name in enumerate(names)})
    np.testing.assert_array_equal(restored.state.cov[0], devices.state.cov[0])
    assert restored.state.rows[0] == 300 and restored.state.first_window[0] == 1
    out = restored.process(slots[:3], rows[0], np.array([9e4, 9e4, 9e4]))
    assert out.device[2] == 0 and out.score[2] == 0.0  # a fresh forest, warming up


def test_a_long_fault_keeps_the_device_alert_open_until_it_ends(tmp_path: Path) -> None:
    """Replay (the product's pipeline): one joint alert opens early in a 400-row fault, is open
    on its rows, and resolves within a few rows of its end."""
    rows, fault = long_fault()
    source = tmp_path / "pump.csv"
    source.write_text("timestamp,current,flow,pressure\n" + "".join(
        f"{1.7e9 + i:.0f},{c:.5f},{f:.5f},{p:.5f}\n" for i, (c, f, p) in enumerate(rows)))
    replay_csv(Pipeline(parse_config({})), source, tmp_path / "out.csv")
    with (tmp_path / "out.csv").open() as handle:
        out = list(csv.DictReader(handle))
    is_open = np.array([r["alert_open"] == "1" for r in out])
    opened = [i for i, r in enumerate(out) if r["alert"] == "1"]
    assert [out[i]["explanation"].split(":")[0] for i in opened] == ["joint"]
    assert fault.start <= opened[0] <= fault.start + 30
    assert is_open[opened[0]:fault.stop].all()
    assert not is_open[fault.stop + 20:].any()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_daemons_device_alert_stays_open_through_a_long_fault(
    broker: LocalBroker, daemon_env: tuple[Path, Path], tmp_path: Path
) -> None:
    """The same pump over MQTT (one JSON map a second, its own timestamps) to the real daemon:
    one alert on ``<device>/joint`` opens in the fault and resolves only after it ends."""
    config, _db = daemon_env
    rows, fault = long_fault()
    device = "sensors/pump7"
    observer = Observer(broker, ["edge-ml/#"])
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    start = 1.7e9
    try:
        wait_for(lambda: b"online" in observer.on("edge-ml/status")
                 or daemon.proc.poll() is not None, 120, "the daemon to come online")
        assert daemon.proc.poll() is None, daemon.log()
        for i, (c, f, p) in enumerate(rows.tolist()):
            observer.client.publish(device, json.dumps(
                {"current": c, "flow": f, "pressure": p, "ts": start + i}), qos=1)
        events = wait_for(lambda: [e for e in observer.json_under(
            f"edge-ml/alerts/{device}/joint") if e["state"] == "resolved"] and observer.json_under(
            f"edge-ml/alerts/{device}/joint"), 120, "the joint alert to open and resolve")
    finally:
        code = daemon.stop()
        observer.close()
    assert code == 0, daemon.log()
    assert [e["state"] for e in events] == ["open", "resolved"]
    assert fault.start <= events[0]["ts"] - start <= fault.start + 30
    assert fault.stop <= events[1]["ts"] - start <= fault.stop + 20
    assert events[0]["view"] == "joint" and f"{device}/flow" in events[0]["fields"]


def test_a_checkpoint_in_the_middle_of_a_long_fault_resumes_it() -> None:
    """Checkpoint while the device holds its evidence (and its learning): the resumed pipeline
    gives the same levels, scores and alert as one that never stopped."""
    from edge_ml.checkpoint_format import decode, encode
    from edge_ml.state import export_state, restore_state

    rows, fault = long_fault()
    messages = [("sensors/pump", json.dumps({"current": c, "flow": f, "pressure": p,
                                             "ts": 1.7e9 + i}).encode(), 0.0)
                for i, (c, f, p) in enumerate(rows.tolist())]
    cut = fault.start + 200
    whole, first = Pipeline(parse_config({})), Pipeline(parse_config({}))
    for m in messages[:cut]:
        whole.process_messages([m])
        first.process_messages([m])
    assert first.devices.state.evidence[0] >= HOLD_EVIDENCE  # held at the checkpoint
    second = Pipeline(parse_config({}))
    restore_state(second, decode(encode(export_state(first)).blob))
    resolved = []
    for m in messages[cut:]:
        a, b = whole.process_messages([m]), second.process_messages([m])
        assert a is not None and b is not None and a.joint is not None and b.joint is not None
        assert a.joint.level.tolist() == b.joint.level.tolist()
        assert a.joint.score.tolist() == b.joint.score.tolist()
        resolved += [e.ts for e in b.events if e.stream.endswith("/joint")]
    # The alert opened before the checkpoint resolves once, after the fault.
    assert len(resolved) == 1 and resolved[0] - 1.7e9 >= fault.stop


def clusters(n: int, seed: int = 5) -> np.ndarray:
    """Rows of a machine with three modes of operation, each lasting a few rows (a new mode
    drawn on 30% of rows): one Gaussian fits none of them."""
    rng = np.random.default_rng(seed)
    centers = 3.0 * np.array([[0.0, 0.0, 0.0, 0.0], [4.0, 4.0, 0.0, 1.0], [0.0, 4.0, 4.0, 2.0]])
    mode = np.zeros(n, dtype=np.int64)
    for t in range(1, n):
        mode[t] = rng.choice(3, p=[0.8, 0.1, 0.1]) if rng.random() < 0.3 else mode[t - 1]
    return centers[mode] + rng.normal(0, 0.3, (n, 4))


def test_a_device_one_gaussian_does_not_fit_sets_its_evidence_aside() -> None:
    """Evidence on a device whose ordinary rows come from several clusters would hold it (and
    its alert) open on most rows; once it is held on a quarter of them, it is set aside."""
    rows = clusters(6000)
    names = [f"m/f{j}" for j in range(4)]
    devices = Devices()
    devices.assign(names, np.arange(4, dtype=np.int64), dict.fromkeys(names, "m"), names)
    out = devices.process(np.tile(np.arange(4, dtype=np.int64), len(rows)), rows.reshape(-1),
                          np.repeat(np.arange(float(len(rows))), 4))
    levels = out.level[out.device == 0]
    np.testing.assert_allclose(levels, reference(rows)[0], rtol=1e-9, atol=1e-12)
    assert devices.state.unfit[0] == 1
    assert (levels[3000:] >= 0.4).mean() < 0.1  # the row's own level only

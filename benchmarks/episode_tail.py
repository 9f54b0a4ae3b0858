"""Experiment (issue 13): the levels recalibrated per stream from the peaks of the stream's own
*isolated* extreme episodes, then re-alerted and scored; round 5's rule was chosen with it.

The kernel's levels do not depend on alerts, so ``--record`` replays every NAB file and every
calibration-suite stream once through the pipeline (``replay_csv``, recording each batch's
levels, warm-up flags, views and z), and each variant is then scored from the recording,
per stream, online and in reading order. Record from a build *before* round 5 (commit
00fe126, for example in a ``git worktree``): main's levels already include the shipped tail,
and recalibrating them again would count it twice.

Modes (``"mode"`` in a variant):

- ``hill`` (shipped as ``kernels.calibration.tail_*`` with ``k0 = 1``, ``n0 = 1 / rate``,
  ``max_run = 1``): an episode opens at a level >= ``L0`` (no sooner than ``cool`` readings
  after the last one) and closes ``ep_len`` readings later once the level is under ``L0``;
  only episodes with at most ``max_run`` readings at >= L0 are learned (a heavy-tailed sensor's
  extremes are isolated; anomalies come as runs). Episodes come at ``lam`` per reading and
  their peaks, as Gaussian-equivalent |z|, have a Pareto (Hill) tail ``gamma``; a seasonal
  reading's |z| is scaled by ``z_alert / z*`` when below 1, where ``z*`` is the peak that
  comes at ``rate``. See ``hill_tail``.
- ``isolated``: the same tail from single isolated exceedances rather than episodes
  (rejected: K 43.8-45.4).
- default: an exponential tail of the episode peaks' excess in ``-ln p`` units, every level
  lowered by it (rejected: leave-one-group-out fails on K and S).

The alert rule is the shipped one (0.5 / 0.4, cooldown 150). Prints the NAB groups (standard
profile, alert decisions), the suite score S (100 x mean recall - mean false alerts / 10k),
false alerts per kind and, for several variants, the leave-one-group-out choice.

Usage: python benchmarks/episode_tail.py --cache /tmp/et/cache --record nab
       python benchmarks/episode_tail.py --cache /tmp/et/cache --record suite
       python benchmarks/episode_tail.py --cache /tmp/et/cache '[null, {"mode": "hill",
         "L0": 0.4, "cool": 150, "rate": 1e-4, "n0": 10000, "k0": 1, "max_run": 1}]'
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import erfcinv

sys.path.insert(0, str(Path(__file__).parent))
import calibration_suite as cs

import edge_ml.model.detector as detector_module
from edge_ml.config import parse_config
from edge_ml.evaluate import (
    PROFILES,
    _normalise,
    _null_perfect,
    evaluate,
    load_labels,
    load_results,
)
from edge_ml.kernels.explain import EXPECTED_Z
from edge_ml.pipeline import Pipeline
from edge_ml.replay import replay_csv

LN_1E10 = 23.025850929940457
_RECORDED: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
_process = detector_module.NumbaDetector.process


def _recording_process(self, *args, **kwargs):
    detection = _process(self, *args, **kwargs)
    # |z| of the seasonal view, from the usual range (centre +- EXPECTED_Z * |residual / z|).
    half = 0.5 * (detection.expected[:, 1] - detection.expected[:, 0])
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.nan_to_num(EXPECTED_Z * np.abs(detection.residual) / half)
    _RECORDED.append((detection.levels.copy(), detection.warming.copy(), detection.view.copy(),
                      z))
    return detection


detector_module.NumbaDetector.process = _recording_process  # type: ignore[method-assign]


def levels_of(source: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Levels, warm-up flags and views of a CSV replayed with the shipped defaults."""
    _RECORDED.clear()
    replay_csv(Pipeline(parse_config({})), source, None)
    return tuple(np.concatenate([r[k] for r in _RECORDED]) for k in range(4))  # type: ignore


def alerts(levels: np.ndarray, warming: np.ndarray, threshold: float = 0.5,
           resolve: float = 0.4, cooldown: int = 150) -> np.ndarray:
    """The shipped alert rule (debounce 1): where an alert opens."""
    opened = np.zeros(len(levels), bool)
    is_open = False
    since = 1 << 40
    for i, level in enumerate(levels):
        since += 1
        if is_open:
            is_open = level >= resolve
        elif not warming[i] and level >= threshold and since > cooldown:
            is_open = True
            since = 0
            opened[i] = True
    return opened


def recalibrate(rec: Any, p: dict[str, Any] | None) -> np.ndarray:
    """The recorded levels recalibrated per stream by variant ``p`` (None: as recorded)."""
    if p is None:
        return rec["levels"]
    if p.get("mode") == "isolated":
        return isolated_tail(rec["levels"], rec["warming"], rec["view"], rec["z"], p)
    if p.get("mode") == "hill":
        return hill_tail(rec["levels"], rec["warming"], rec["view"], rec["z"], p)
    return episode_tail(rec["levels"], rec["warming"], rec["view"], p)


def gaussian_z(levels: np.ndarray) -> np.ndarray:
    """The |z| whose two-sided Gaussian tail is ``1e-10 ** level`` (level 1: 6.47, saturated)."""
    prob = np.exp(-np.clip(levels, 0.0, 1.0) * LN_1E10)
    return np.sqrt(2.0) * erfcinv(prob)


def hill_tail(levels: np.ndarray, warming: np.ndarray, view: np.ndarray, z: np.ndarray,
              p: dict[str, Any]) -> np.ndarray:
    """Seasonal levels rescaled by a Pareto tail of the stream's isolated extreme episodes.

    An episode's peak is the largest Gaussian-equivalent |z| in it; the Hill estimate ``gamma``
    is the mean of ``ln(peak / z0)`` (prior ``k0`` episodes at a Gaussian's ``1 / z0^2``).
    Episodes come at ``lam`` per reading, so a peak beyond ``z* = z0 (lam / rate)^gamma`` comes
    at ``rate``: a seasonal reading's |z| is scaled by ``z_alert / z*`` when that is below 1.
    """
    l0, cool, rate = p["L0"], p["cool"], p["rate"]
    z0 = float(gaussian_z(np.array([l0]))[0])
    z_alert = float(gaussian_z(np.array([0.5]))[0])
    gamma0 = 1.0 / (z0 * z0)
    zeq = np.maximum(gaussian_z(levels), np.where(view == 0, z, 0.0))
    out = levels.copy()
    n = episodes = run = 0
    log_excess = peak = 0.0
    in_episode = False
    since = 1 << 40
    for i, level in enumerate(levels):
        if warming[i]:
            continue
        n += 1
        since += 1
        lam = (episodes + p["n0"] * rate) / (n + p["n0"])
        gamma = (log_excess + p["k0"] * gamma0) / (episodes + p["k0"])
        z_star = z0 * max(lam / rate, 1.0) ** gamma
        if view[i] == 0 and z_star > z_alert:
            x = zeq[i] * z_alert / z_star
            out[i] = min(1.0, max(0.0, -math.log(math.erfc(x / math.sqrt(2.0)) + 1e-10)
                                  / LN_1E10))
        if level >= l0:
            if not in_episode and since > cool:
                in_episode, peak, since, run = True, zeq[i], 0, 1
            elif in_episode:
                peak = max(peak, zeq[i])
                run += 1
        elif in_episode and since > p.get("ep_len", 10):
            in_episode = False
            if run <= p.get("max_run", 1 << 30):
                episodes += 1
                log_excess += math.log(max(peak, z0) / z0)
    return out


def isolated_tail(levels: np.ndarray, warming: np.ndarray, view: np.ndarray, z: np.ndarray,
                  p: dict[str, Any]) -> np.ndarray:
    """Seasonal levels rescaled by a Pareto tail of the stream's isolated exceedances.

    A reading at level >= L0 whose neighbours (the scored readings before and after) are
    both under L0 is an isolated exceedance (a heavy-tailed sensor's extreme; a labelled
    anomaly comes as a run); it is learned one reading late, once its successor is seen.
    Their rate per reading is ``lam`` (prior ``n0`` readings at ``rate``) and the Hill mean of
    ``ln(|z| / z0)`` is ``gamma`` (prior ``k0`` at a Gaussian's ``1 / z0^2``); a peak beyond
    ``z* = z0 (lam / rate)^gamma`` comes at ``rate`` per reading.
    """
    l0, rate = p["L0"], p["rate"]
    z0 = float(gaussian_z(np.array([l0]))[0])
    z_alert = float(gaussian_z(np.array([0.5]))[0])
    gamma0 = 1.0 / (z0 * z0)
    zeq = np.maximum(gaussian_z(levels), np.where(view == 0, z, 0.0))
    out = levels.copy()
    n = count = 0
    log_excess = 0.0
    prev_over = False  # the scored reading before was at >= L0
    pending = -1.0  # an exceedance after a reading under L0, waiting for its successor
    for i, level in enumerate(levels):
        if warming[i]:
            continue
        n += 1
        over = level >= l0
        if pending >= 0.0 and not over:
            count += 1
            log_excess += math.log(max(pending, z0) / z0)
        pending = zeq[i] if over and not prev_over else -1.0
        prev_over = over
        lam = (count + p["n0"] * rate) / (n + p["n0"])
        gamma = (log_excess + p["k0"] * gamma0) / (count + p["k0"])
        z_star = z0 * max(lam / rate, 1.0) ** gamma
        if view[i] == 0 and z_star > z_alert:
            x = zeq[i] * z_alert / z_star
            out[i] = min(1.0, max(0.0, -math.log(math.erfc(x / math.sqrt(2.0)) + 1e-10)
                                  / LN_1E10))
    return out


def episode_tail(levels: np.ndarray, warming: np.ndarray, view: np.ndarray,
                 p: dict[str, Any]) -> np.ndarray:
    """The levels lowered per stream by the tail of its isolated extreme episodes."""
    l0, cool, rate = p["L0"], p["cool"], p["rate"]
    out = levels.copy()
    n = episodes = run = 0
    excess = peak = 0.0
    in_episode = False
    since = 1 << 40
    for i, level in enumerate(levels):
        if warming[i]:
            continue
        n += 1
        since += 1
        lam = (episodes + p["n0"] * rate) / (n + p["n0"])
        beta = (excess + p["k0"] * p["beta0"]) / (episodes + p["k0"])
        u_star = l0 * LN_1E10 + beta * math.log(max(lam / rate, 1.0))
        if not (p.get("seasonal_only") and view[i] != 0):
            out[i] = max(0.0, level - max(0.0, u_star / LN_1E10 - 0.5))
        if level >= l0:
            if not in_episode and since > cool:
                in_episode, peak, since, run = True, level, 0, 1
            elif in_episode:
                peak = max(peak, level)
                run += 1
        elif in_episode and since > p.get("ep_len", 10):
            in_episode = False
            if run <= p.get("max_run", 1 << 30):
                episodes += 1
                excess += (min(peak, 1.0) - l0) * LN_1E10
    return out


def _write_levels(cache: Path, key: str, levels: np.ndarray, warming: np.ndarray,
                  view: np.ndarray, z: np.ndarray, **extra: int) -> None:
    path = cache / (key.replace("/", "__") + ".npz")
    np.savez(path, levels=levels, warming=warming, view=view, z=z, **extra)


def record_nab(nab_dir: Path, cache: Path) -> None:
    """Record the shipped levels of every labelled NAB file into ``cache``."""
    for name in load_labels(nab_dir / "labels" / "combined_windows.json"):
        _write_levels(cache, "nab/" + name, *levels_of(nab_dir / "data" / name))


def record_suite(cache: Path, seeds: int = 3, readings: int = 15000) -> None:
    """Record the shipped levels of the calibration suite's streams into ``cache``."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, (kind, fixed) in cs.KINDS.items():
            if name in cs.LABELLED_ONLY:
                continue
            for seed in range(seeds):
                ts, values, _ = kind(fixed or readings, np.random.default_rng(1000 + seed))
                cs.write_csv(folder / "s.csv", ts, values)
                _write_levels(cache, f"free/{name}/{seed}", *levels_of(folder / "s.csv"))
        for name, (kind, fixed) in cs.KINDS.items():
            n = min(fixed or readings, 8000)
            at = int(cs.AT_SHARE.get(name, 0.6) * n)
            for anomaly in cs.ANOMALY_TYPES:
                for seed in range(2):
                    rng = np.random.default_rng(5000 + seed)
                    ts, values, signal = kind(n, rng)
                    values, end = cs.inject(name, anomaly, ts, values, signal, at, rng)
                    if name in ("poisson_mean5", "poisson_mean0.7", "sparse_counter"):
                        values = np.maximum(np.round(values), 0.0)
                    cs.write_csv(folder / "l.csv", ts, values)
                    _write_levels(cache, f"lab/{name}/{anomaly}/{seed}",
                                  *levels_of(folder / "l.csv"), at=at, end=end)


def _cached(cache: Path, prefix: str) -> dict[str, Any]:
    stem = prefix.replace("/", "__")
    return {f.stem.replace("__", "/"): np.load(f) for f in sorted(cache.glob(stem + "*.npz"))}


def nab(nab_dir: Path, cache: Path, p: dict[str, Any] | None) -> tuple[float, dict[str, float]]:
    labels_path = nab_dir / "labels" / "combined_windows.json"
    labels = load_labels(labels_path)
    with tempfile.TemporaryDirectory() as tmp:
        for name in labels:
            rows = list(csv.reader((nab_dir / "data" / name).open()))[1:]
            rec = np.load(cache / (("nab/" + name).replace("/", "__") + ".npz"))
            warming = rec["warming"]
            new = recalibrate(rec, p)
            opened = alerts(new, warming)
            out = Path(tmp) / name
            out.parent.mkdir(parents=True, exist_ok=True)
            lines = ["timestamp,value,anomaly_score,alert"]
            lines += [f"{r[0]},{r[1]},{min(max(s, 0.0), 1.0):.6f},{int(a)}"
                      for r, s, a in zip(rows, new, opened, strict=True)]
            out.write_text("\n".join(lines) + "\n")
        report = evaluate(tmp, labels_path, ["standard"])
        sweeps = {f.name: f.sweep for f in load_results(tmp, labels)}
    standard = report.profiles[0]
    groups: dict[str, list] = {}
    for row in standard.files:
        groups.setdefault(row.name.split("/")[0], []).append(row)
    scores = {}
    for group, rows in groups.items():
        null, perfect = _null_perfect([sweeps[r.name] for r in rows], PROFILES["standard"])
        scores[group] = _normalise(sum(r.alert.raw for r in rows), null, perfect)
    return standard.alert_score, scores


def suite(cache: Path, p: dict[str, Any] | None) -> tuple[dict[str, float], dict[str, float]]:
    opened: dict[str, int] = {}
    total: dict[str, int] = {}
    for key, rec in _cached(cache, "free/").items():
        name = key.split("/")[1]
        warming = rec["warming"]
        new = recalibrate(rec, p)
        opened[name] = opened.get(name, 0) + int(alerts(new, warming).sum())
        total[name] = total.get(name, 0) + len(warming)
    rates = {name: 1e4 * opened[name] / total[name] for name in cs.KINDS if name in total}
    found: dict[str, list[bool]] = {}
    for key, rec in _cached(cache, "lab/").items():
        anomaly = key.split("/")[2]
        warming = rec["warming"]
        rows = np.flatnonzero(alerts(recalibrate(rec, p),
                                     warming))
        at, end = int(rec["at"]), int(rec["end"])
        found.setdefault(anomaly, []).append(bool(((rows >= at) & (rows <= end)).any()))
    return rates, {a: float(np.mean(found[a])) for a in cs.ANOMALY_TYPES}


def score(nab_dir: Path, cache: Path, p: dict[str, Any] | None) -> dict[str, Any]:
    pooled, groups = nab(nab_dir, cache, p)
    rates, recall = suite(cache, p)
    s = 100 * np.mean(list(recall.values())) - np.mean(list(rates.values()))
    return {"A": groups["artificialWithAnomaly"], "W": groups["realAWSCloudwatch"],
            "K": groups["realKnownCause"], "S": float(s), "pooled": pooled,
            "rates": rates, "recall": recall}


def leave_one_group_out(rows: list[dict[str, Any]]) -> None:
    """For each held-out group, the variant best on the mean of the other three, scored there."""
    for held in "AWKS":
        rest = [g for g in "AWKS" if g != held]
        best = max(rows, key=lambda r: np.mean([r[g] for g in rest]))
        print(f"held out {held}: chose {json.dumps(best['p'])} -> {held} {best[held]:.2f} "
              f"(first row {rows[0][held]:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nab", type=Path, default=Path("../shared/data/nab"))
    parser.add_argument("--cache", type=Path, required=True,
                        help="folder of recorded levels (written by --record)")
    parser.add_argument("--record", choices=("nab", "suite"),
                        help="replay and record this part's shipped levels, then stop")
    parser.add_argument("variants", nargs="?",
                        help="JSON list of parameter sets (null: the shipped levels)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.record:
        args.cache.mkdir(parents=True, exist_ok=True)
        (record_nab(args.nab, args.cache) if args.record == "nab" else record_suite(args.cache))
        return
    rows = []
    for p in json.loads(args.variants or "[null]"):
        row = score(args.nab, args.cache, p) | {"p": p}
        rows.append(row)
        worst = max(row["rates"], key=row["rates"].__getitem__)
        print(f"{json.dumps(p)}\n  A {row['A']:.2f} W {row['W']:.2f} K {row['K']:.2f} "
              f"S {row['S']:.2f} pooled {row['pooled']:.2f} worst {worst} "
              f"{row['rates'][worst]:.2f}", flush=True)
        print("  recall", " / ".join(f"{v:.2f}" for v in row["recall"].values()))
        print("  false alerts / 10k", " ".join(f"{k}:{v:.2f}" for k, v in row["rates"].items()))
    if len(rows) > 1:
        leave_one_group_out(rows)


if __name__ == "__main__":
    main()

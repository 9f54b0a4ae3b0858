"""Experiment (issue 13, not shipped): the shipped levels recalibrated per stream from the peaks
of the stream's own *isolated* extreme episodes, then re-alerted and scored.

The kernel's levels do not depend on alerts, so this replays every NAB file and every
calibration-suite stream through the shipped pipeline (``replay_csv``, recording each batch's
levels, warm-up flags and views), then per stream, online and in reading order:

- an episode opens at a level >= ``L0`` (no sooner than ``cool`` readings after the last one)
  and closes ``ep_len`` readings later once the level is under ``L0``; with ``max_run`` only
  episodes with at most that many readings at >= L0 are learned (isolated extremes, as a
  heavy-tailed sensor has; NAB's labelled anomalies come as runs);
- episode rate ``lam = (episodes + n0 * rate) / (readings + n0)`` and mean excess of the peak
  over L0 in ``-ln p`` units ``beta = (excess + k0 * beta0) / (episodes + k0)``;
- the alert threshold on ``-ln p`` is ``u* = L0 * ln(1e10) + beta * ln(max(lam / rate, 1))``:
  a stream whose extreme episodes come more often than ``rate`` per reading needs rarer readings
  to alert; every level is lowered by ``max(0, u* / ln(1e10) - 0.5)`` (with ``seasonal_only``,
  levels of the stuck and model views are left alone).

The alert rule is the shipped one (0.5 / 0.4, cooldown 150). Prints the NAB groups (standard
profile, alert decisions), the suite score S (100 x mean recall - mean false alerts / 10k) and
false alerts per kind. No argument: the shipped levels (reproduces nab_groups.py and the suite).

Usage: python benchmarks/episode_tail.py --nab ../shared/data/nab '{"L0": 0.4, "cool": 150,
       "rate": 1e-4, "n0": 20000, "k0": 10, "beta0": 1.0, "max_run": 1, "seasonal_only": 1}'
"""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

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
from edge_ml.pipeline import Pipeline
from edge_ml.replay import replay_csv

LN_1E10 = 23.025850929940457
_RECORDED: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
_process = detector_module.NumbaDetector.process


def _recording_process(self, *args, **kwargs):
    detection = _process(self, *args, **kwargs)
    _RECORDED.append((detection.levels.copy(), detection.warming.copy(), detection.view.copy()))
    return detection


detector_module.NumbaDetector.process = _recording_process  # type: ignore[method-assign]


def levels_of(source: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Levels, warm-up flags and views of a CSV replayed with the shipped defaults."""
    _RECORDED.clear()
    replay_csv(Pipeline(parse_config({})), source, None)
    return tuple(np.concatenate([r[k] for r in _RECORDED]) for k in range(3))  # type: ignore


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


def recalibrate(levels: np.ndarray, warming: np.ndarray, view: np.ndarray,
                p: dict[str, Any] | None) -> np.ndarray:
    """The levels lowered per stream by the tail of its isolated extreme episodes."""
    if p is None:
        return levels
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


def nab(nab_dir: Path, p: dict[str, Any] | None) -> tuple[float, dict[str, float]]:
    labels_path = nab_dir / "labels" / "combined_windows.json"
    labels = load_labels(labels_path)
    with tempfile.TemporaryDirectory() as tmp:
        for name in labels:
            rows = list(csv.reader((nab_dir / "data" / name).open()))[1:]
            levels, warming, view = levels_of(nab_dir / "data" / name)
            new = recalibrate(levels, warming, view, p)
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


def suite(p: dict[str, Any] | None, folder: Path, seeds: int = 3,
          readings: int = 15000) -> tuple[dict[str, float], dict[str, float]]:
    rates = {}
    for name, (kind, fixed) in cs.KINDS.items():
        if name in cs.LABELLED_ONLY:
            continue
        opened = total = 0
        for seed in range(seeds):
            n = fixed or readings
            ts, values, _ = kind(n, np.random.default_rng(1000 + seed))
            cs.write_csv(folder / "s.csv", ts, values)
            levels, warming, view = levels_of(folder / "s.csv")
            opened += int(alerts(recalibrate(levels, warming, view, p), warming).sum())
            total += n
        rates[name] = 1e4 * opened / total
    found: dict[str, list[bool]] = {}
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
                levels, warming, view = levels_of(folder / "l.csv")
                rows = np.flatnonzero(alerts(recalibrate(levels, warming, view, p), warming))
                found.setdefault(anomaly, []).append(bool(((rows >= at) & (rows <= end)).any()))
    return rates, {a: float(np.mean(h)) for a, h in found.items()}


def main() -> None:
    args = sys.argv[1:]
    nab_dir = Path("../shared/data/nab")
    if args[:1] == ["--nab"]:
        nab_dir, args = Path(args[1]), args[2:]
    p = json.loads(args[0]) if args else None
    logging.basicConfig(level=logging.ERROR)
    pooled, groups = nab(nab_dir, p)
    with tempfile.TemporaryDirectory() as tmp:
        rates, recall = suite(p, Path(tmp))
    s = 100 * np.mean(list(recall.values())) - np.mean(list(rates.values()))
    worst = max(rates, key=rates.__getitem__)
    print(json.dumps(p))
    print(f"A {groups['artificialWithAnomaly']:.1f} W {groups['realAWSCloudwatch']:.1f} "
          f"K {groups['realKnownCause']:.1f} S {s:.1f} pooled {pooled:.1f} "
          f"worst {worst} {rates[worst]:.1f}")
    print("recall", " / ".join(f"{v:.2f}" for v in recall.values()))
    print("false alerts / 10k", " ".join(f"{k}:{v:.1f}" for k, v in rates.items()))


if __name__ == "__main__":
    main()

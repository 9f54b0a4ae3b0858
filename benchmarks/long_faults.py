"""Long relationship faults on a pump test rig through ``edge-ml replay``: rows flagged while an
alert is open (issue 14, the SKAB-like protocol).

Runs: ``--runs`` (34) of 1,000-1,500 rows each, one row a second, eight sensors (current,
voltage, flow, pressure, two vibration RMS, temperature, thermocouple), no daily cycle. A hidden
load wanders slowly (an AR(1) of a few minutes' memory plus noise); every sensor is a linear
function of it plus its own noise, the temperatures also drift slowly. Each run is one CSV,
replayed with the shipped defaults by ``edge-ml replay`` (per-field views plus the file's
device), learning online from its first row.

One fault per run, starting 450-700 rows in and lasting 30-50 % of the run, ending at least 100
rows before its end (ramping in over 20 rows):

- ``valve`` (a valve closing): flow reads as at a load ``delta`` lower, pressure as at a load
  ``delta`` higher, ``delta`` uniform in 0.08-0.25 (the load's own spread is ~0.15);
- ``cavitation``: both vibrations read as at a load ``delta`` higher, flow as at ``delta / 2``
  lower, and the pressure's noise doubles.

Every faulty value stays inside the range its field covers in the run's normal rows most of the
time (the load moves more than ``delta``): no field is out of the ordinary on its own.

Scoring (the maintainers' protocol for the pump rig): rows after the first 400 of each run;
a row is flagged when ``alert_open`` is 1 (from the row an alert opens on, on any column, to
the one before its resolve). Row-wise precision, recall, F1 and the false-alarm rate (flagged
normal rows / normal rows), summed over all runs. The same runs as eight single-column files
give what the per-field views alone flag.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/long_faults.py [--runs 34] [--seed 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from multisensor import read_out, replay, write_csv

FIELDS = ("current", "voltage", "flow", "pressure", "accel1", "accel2", "temperature",
          "thermocouple")
# field = intercept + slope * load + noise (sd)
MODEL = {"current": (2.0, 6.0, 0.15), "voltage": (232.0, -4.0, 0.5),
         "flow": (0.0, 10.0, 0.25), "pressure": (1.0, 3.0, 0.1),
         "accel1": (0.5, 1.5, 0.06), "accel2": (0.4, 1.2, 0.06),
         "temperature": (40.0, 2.0, 0.1), "thermocouple": (41.0, 2.0, 0.15)}
SKIP_ROWS = 400
RAMP_ROWS = 20


def run(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
    """Values ``[rows, 8]``, the fault mask ``[rows]`` and the fault's kind."""
    n = int(rng.integers(1000, 1501))
    slow = np.zeros(n)
    for t in range(1, n):  # AR(1), ~3 minutes of memory, sd ~0.14
        slow[t] = 0.995 * slow[t - 1] + rng.normal(0, 0.014)
    load = np.clip(0.5 + slow + rng.normal(0, 0.03, n), 0.05, 1.0)
    drift = np.cumsum(rng.normal(0, 0.01, n))  # the temperatures' slow drift
    values = np.column_stack([MODEL[f][0] + MODEL[f][1] * load + rng.normal(0, MODEL[f][2], n)
                              for f in FIELDS])
    values[:, 6:8] += drift[:, None]
    length = int(rng.uniform(0.3, 0.5) * n)
    start = int(rng.integers(450, 701))
    start = min(start, n - 100 - length)
    end = start + length
    ramp = np.minimum(1.0, (np.arange(length) + 1) / RAMP_ROWS)
    delta = rng.uniform(0.08, 0.25) * ramp
    kind = "valve" if rng.random() < 0.5 else "cavitation"
    col = {f: j for j, f in enumerate(FIELDS)}

    def shift(field: str, by: np.ndarray) -> None:
        values[start:end, col[field]] += MODEL[field][1] * by

    if kind == "valve":
        shift("flow", -delta)
        shift("pressure", delta)
    else:
        shift("accel1", delta)
        shift("accel2", delta)
        shift("flow", -delta / 2)
        values[start:end, col["pressure"]] += rng.normal(0, MODEL["pressure"][2], length)
    fault = np.zeros(n, dtype=bool)
    fault[start:end] = True
    return values, fault, kind


def rates(flagged: np.ndarray, fault: np.ndarray) -> dict[str, float]:
    tp = int((flagged & fault).sum())
    fp = int((flagged & ~fault).sum())
    fn = int((~flagged & fault).sum())
    tn = int((~flagged & ~fault).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1,
            "far": fp / (fp + tn) if fp + tn else 0.0, "flagged": int(flagged.sum()),
            "rows": len(fault), "fault_rows": int(fault.sum())}


def long_faults(runs: int, seed: int, work: Path) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(seed)
    multi, single = work / "rig", work / "rig_single"
    multi.mkdir()
    single.mkdir()
    truth = {}
    for r in range(runs):
        values, fault, kind = run(rng)
        name = f"run{r:02d}"
        truth[name] = (fault, kind)
        write_csv(multi / f"{name}.csv", list(FIELDS), values, step=1)
        for j, field in enumerate(FIELDS):
            write_csv(single / f"{name}_{field}.csv", ["value"], values[:, j:j + 1], step=1)
    seconds = replay(multi, work / "rig_out") + replay(single, work / "rig_single_out")
    product, per_field, faults, scores = [], [], [], []
    found = {"valve": [0, 0], "cavitation": [0, 0]}
    for name, (fault, kind) in truth.items():
        out = read_out(work / "rig_out" / f"{name}.csv")
        alone = np.zeros(len(fault), dtype=bool)
        for field in FIELDS:
            alone |= read_out(work / "rig_single_out" / f"{name}_{field}.csv")["open"]
        keep = slice(SKIP_ROWS, None)
        product.append(out["open"][keep])
        per_field.append(alone[keep])
        faults.append(fault[keep])
        scores.append(out["score"][keep])
        found[kind][0] += 1
        found[kind][1] += bool((out["open"] & fault).any())
    fault_all = np.concatenate(faults)
    result = {"product": rates(np.concatenate(product), fault_all),
              "per_field": rates(np.concatenate(per_field), fault_all),
              # the rows' levels alone at the alert threshold, without the alert's hysteresis
              "level": rates(np.concatenate(scores) >= 0.5, fault_all)}
    result["runs"] = {"seconds": seconds, **{f"{k}_runs": v[0] for k, v in found.items()},
                      **{f"{k}_found": v[1] for k, v in found.items()}}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=34)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        r = long_faults(args.runs, args.seed, Path(tmp))
    p, f, runs = r["product"], r["per_field"], r["runs"]
    print(f"pump rig: {args.runs} runs, {p['rows']:,} rows scored (after the first {SKIP_ROWS} "
          f"of each), {p['fault_rows']:,} of them faulty; replay {runs['seconds']:.1f} s")
    for label, x in (("product (alert_open)", p), ("per-field views alone", f),
                     ("rows' own level >= 0.5", r["level"])):
        print(f"{label}: F1 {x['f1']:.3f} (precision {x['precision']:.3f}, recall "
              f"{x['recall']:.3f}), false-alarm rate {100 * x['far']:.1f}%, "
              f"{x['flagged']:,} rows flagged")
    print(f"faults with an alert open on some row: valve {runs['valve_found']}/"
          f"{runs['valve_runs']}, cavitation {runs['cavitation_found']}/{runs['cavitation_runs']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Leave one group out over variants already measured: which row each fold picks, and what the
held-out group scores with it (issue 13: "tune on four groups, score the fifth, rotate").

Each row is one variant (a constant's value, a rule on or off), given as the JSON files that
``nab_groups.py --json`` and ``calibration_suite.py --json`` wrote for it in the same sitting:
the NAB groups A (artificialWithAnomaly), W (realAWSCloudwatch) and K (realKnownCause), and the
suite's S = 100 x mean recall - mean false alerts / 10k (the anomaly-free rates from one run,
the recall from another, as docs/benchmarks.md's S12 takes them; one file may hold both).

With ``--beyond-chance`` S takes each type's recall beyond the placebo's chance finds instead
(``calibration_suite.beyond_chance``, in the recall file since round 14). Raw recall counts a
false alert that happens to fall in a 2,000-reading slow-drift window as a find, so a variant
that raises fewer false alerts loses recall it never had (round 19, docs/benchmarks.md).

A fold holds one group out, picks the row with the best sum over the other groups (the first
row wins a tie, so put the shipped row first), and scores the held-out group with that row.
A change is worth shipping when the held-out scores beat the first row's, not when the pooled
one does.

Usage: python benchmarks/leave_one_group_out.py [--beyond-chance] \\
           --row "none" none.nab.json none.fa.json none.rc.json \\
           --row "skew > 1" root1.nab.json root1.fa.json root1.rc.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

NAB_GROUPS = {"A": "artificialWithAnomaly", "W": "realAWSCloudwatch", "K": "realKnownCause"}
GROUPS = (*NAB_GROUPS, "S")


def suite_score(false_alerts: dict, recall: dict) -> float:
    """S: 100 x mean recall over the anomaly types - mean false alerts / 10k over the kinds.

    >>> suite_score({"a": 1.0, "b": 3.0}, {"spike": 0.5, "shift": 0.7})
    58.0
    """
    mean_recall = float(np.mean(list(recall.values())))
    return 100.0 * mean_recall - float(np.mean(list(false_alerts.values())))


def load_row(nab: Path, suite_false: Path, suite_recall: Path,
             beyond_chance: bool = False) -> dict[str, float]:
    """One variant's group scores, and its pooled NAB score (``pooled``); S from the recall
    beyond chance with ``beyond_chance``."""
    groups = json.loads(nab.read_text())
    false_alerts = json.loads(suite_false.read_text())["false_alerts_per_10k"]
    key = "recall_beyond_chance_by_type" if beyond_chance else "recall_by_type"
    recall = json.loads(suite_recall.read_text())[key]
    row = {g: float(groups["groups"][name]["score"]) for g, name in NAB_GROUPS.items()}
    return row | {"S": suite_score(false_alerts, recall), "pooled": float(groups["pooled"])}


def folds(rows: dict[str, dict[str, float]]) -> dict[str, tuple[str, float]]:
    """For each held-out group, ``(the row the other groups pick, its held-out score)``.

    >>> rows = {"none": {"A": 80, "W": 63, "K": 72, "S": 68},
    ...         "low": {"A": 80, "W": 61, "K": 72, "S": 69},
    ...         "high": {"A": 80, "W": 64, "K": 72, "S": 68}}
    >>> folds(rows)["W"], folds(rows)["S"]
    (('low', 61), ('high', 68))
    """
    picked = {}
    for held in GROUPS:
        best = max(rows, key=lambda name: sum(rows[name][g] for g in GROUPS if g != held))
        picked[held] = (best, rows[best][held])
    return picked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--row", nargs=4, action="append", required=True,
                        metavar=("NAME", "NAB_JSON", "SUITE_FALSE_JSON", "SUITE_RECALL_JSON"),
                        help="one variant (the first is the baseline, picked on ties)")
    parser.add_argument("--beyond-chance", action="store_true",
                        help="S from each type's recall beyond the placebo's chance finds")
    args = parser.parse_args()
    rows = {name: load_row(Path(nab), Path(false), Path(recall), args.beyond_chance)
            for name, nab, false, recall in args.row}
    width = max(len(name) for name in rows)
    print(f"{'row':{width}s}" + "".join(f"{g:>8s}" for g in (*GROUPS, "pooled")))
    for name, row in rows.items():
        print(f"{name:{width}s}" + "".join(f"{row[g]:8.2f}" for g in (*GROUPS, "pooled")))
    baseline = next(iter(rows))
    print(f"held out (each fold picks by the sum of the other groups; against {baseline!r}):")
    for held, (name, score) in folds(rows).items():
        delta = score - rows[baseline][held]
        print(f"  {held}: picks {name!r}, scores {score:.2f} ({delta:+.2f})")


if __name__ == "__main__":
    main()

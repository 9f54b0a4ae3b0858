"""NAB alert-decision scores per dev group (standard profile), for leave-one-group-out choices.

Replays every file under ``--nab DIR/data`` with the shipped defaults (``replay_tree``, the code
behind ``edge-ml replay``) and prints the pooled normalised score of the pipeline's own alerts,
the same score for each group of files alone (the group's own null and perfect scores), and with
``--detail`` one line per file (windows found, false alerts, and its isolated extremes inside
and outside the windows: rows whose score reaches ``TAIL_L0`` with none within ``TAIL_GAP``;
close to the episodes a stream's reading tail learns as its normal, but counted on the scored
level, after the tail's own scaling and without its cooldown). ``--json`` writes the numbers, so
that runs with different constants can be compared group by group (see docs/benchmarks.md,
"Leave one group out").

Usage: python benchmarks/nab_groups.py --nab ../shared/data/nab [--json out.json] [--detail]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge_ml.config import Config, load_config, parse_config
from edge_ml.evaluate import (
    PROFILES,
    _normalise,
    _null_perfect,
    evaluate,
    load_labels,
    load_results,
)
from edge_ml.kernels.calibration import TAIL_GAP, TAIL_L0
from edge_ml.replay import replay_tree


def isolated_extremes(scores: npt.NDArray[np.float64],
                      windows: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    """``(inside, outside)`` the labelled windows (inclusive row pairs): the rows whose score
    reaches ``TAIL_L0`` with no other such row within ``TAIL_GAP`` before or after."""
    high = np.flatnonzero(np.nan_to_num(scores) >= TAIL_L0)
    gaps = np.diff(high)
    alone = np.ones(len(high), dtype=bool)
    alone[1:] &= gaps > TAIL_GAP
    alone[:-1] &= gaps > TAIL_GAP
    rows = high[alone]
    inside = sum(int(np.count_nonzero((rows >= first) & (rows <= last)))
                 for first, last in windows)
    return inside, len(rows) - inside


def group_scores(nab_dir: Path, detail: bool = False,
                 config: Config | None = None) -> dict[str, object]:
    config = config or parse_config({})
    profile = PROFILES["standard"]
    with tempfile.TemporaryDirectory() as out:
        replay_tree(config, nab_dir / "data", Path(out))
        report = evaluate(out, nab_dir / "labels" / "combined_windows.json", ["standard"])
        files = load_results(out, load_labels(nab_dir / "labels" / "combined_windows.json"))
    sweeps = {f.name: f.sweep for f in files}
    extremes = {f.name: isolated_extremes(f.scores, f.windows) for f in files}
    standard = report.profiles[0]
    groups: dict[str, list] = {}
    for row in standard.files:
        groups.setdefault(row.name.split("/")[0], []).append(row)
    result: dict[str, object] = {"pooled": standard.alert_score,
                                 "best_threshold": standard.threshold_score, "groups": {}}
    for group, rows in sorted(groups.items()):
        null, perfect = _null_perfect([sweeps[r.name] for r in rows], profile)
        raw = sum(r.alert.raw for r in rows)
        result["groups"][group] = {  # type: ignore[index]
            "score": _normalise(raw, null, perfect), "raw": raw, "null": null,
            "perfect": perfect, "tp": sum(r.alert.tp for r in rows),
            "fn": sum(r.alert.fn for r in rows), "fp": sum(r.alert.fp for r in rows)}
        if detail:
            for r in rows:
                inside, outside = extremes[r.name]
                print(f"  {r.name:60s} windows {r.alert.tp}/{r.windows} false {r.alert.fp:3d} "
                      f"raw {r.alert.raw:7.2f} isolated {inside:2d} in {outside:3d} out")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nab", type=Path, required=True, help="the NAB folder (data/, labels/)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--detail", action="store_true", help="one line per file")
    parser.add_argument("--config", type=Path,
                        help="a TOML configuration to measure instead of the shipped defaults")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    config = load_config(args.config) if args.config else parse_config({})
    report(group_scores(args.nab, args.detail, config), "", args.json)


def report(result: dict[str, object], heading: str, json_path: Path | None,
           width: int = 24) -> None:
    """Print ``group_scores``' result (after ``heading``), and write it to ``json_path``."""
    print(f"{heading}pooled alert decisions {result['pooled']:.1f} "
          f"(best threshold {result['best_threshold']:.1f})")
    for group, g in result["groups"].items():  # type: ignore[attr-defined]
        print(f"  {group:{width}s} {g['score']:6.1f}  windows {g['tp']}/{g['tp'] + g['fn']}  "
              f"false alerts {g['fp']}")
    if json_path:
        json_path.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

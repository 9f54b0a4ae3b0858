"""CPU cost of a device's joint view per row (``Devices.process``: Gaussian view, evidence,
forest), on river's Shuttle rows with the first ``k`` of its nine fields as one device.

Run it under each tree to compare (the code of whichever ``edge_ml`` is first on the path):

    PYTHONPATH=$PWD .venv/bin/python benchmarks/device_cost.py [--fields 2 4 9]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from river import datasets

import edge_ml
from edge_ml.devices import Devices

BATCH = 8192


def cost(values: np.ndarray, k: int, repeats: int = 3) -> float:
    """Best-of-``repeats`` CPU microseconds per row of a ``k``-field device."""
    n = len(values)
    names = [f"shuttle/f{j + 1}" for j in range(k)]
    slots = np.tile(np.arange(k, dtype=np.int64), n)
    flat = values[:, :k].reshape(-1)
    ts = np.repeat(np.arange(float(n)), k)
    best = float("inf")
    for rep in range(repeats + 1):  # the first pass compiles or loads the kernels: untimed
        devices = Devices()
        devices.assign(names, np.arange(k, dtype=np.int64), dict.fromkeys(names, "shuttle"),
                       names)
        started = time.process_time()
        for at in range(0, len(slots), BATCH):
            devices.process(slots[at:at + BATCH], flat[at:at + BATCH], ts[at:at + BATCH])
        if rep:
            best = min(best, time.process_time() - started)
    return 1e6 * best / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, nargs="+", default=[2, 4, 9])
    args = parser.parse_args(argv)
    values = np.array([[float(v) for v in x.values()] for x, _ in datasets.Shuttle()])
    print(f"edge_ml from {edge_ml.__file__}")
    for k in args.fields:
        print(f"{k} fields: {cost(values, k):.2f} us a row ({len(values):,} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How often each kind of stream turns logarithmic or root (``edge_ml.kernels.scale``), by how
many readings the decision waits for.

Draws many short streams of each distribution and feeds each, reading by reading, to the
kernel's own ``scale_learn`` with the decision length under test (the pipeline decides at
``SCALE_READINGS``), without a second look; the last column is the shipped rule, the decision
at ``SCALE_READINGS`` and the second look at ``SECOND_LOOK_READINGS``. Prints the share of
draws that turn logarithmic, and that turn root (docs/benchmarks.md, rounds 10, 14 and 18).

Usage: python benchmarks/scale_decision.py [--draws 2000] [--readings 30 50 100 200]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np

from edge_ml.kernels.scale import (
    LOG,
    N_SCALE,
    RAW_PENDING,
    ROOT,
    S_MODE,
    SCALE_READINGS,
    SECOND_LOOK_READINGS,
    UNDECIDED,
    scale_learn,
)

Draw = Callable[[np.random.Generator, int], np.ndarray]

KINDS: dict[str, Draw] = {
    "log-normal sigma 0.5": lambda rng, n: rng.lognormal(0.0, 0.5, n),
    "log-normal sigma 1": lambda rng, n: rng.lognormal(0.0, 1.0, n),
    "log-normal sigma 1.5": lambda rng, n: rng.lognormal(0.0, 1.5, n),
    "Gaussian 20 +- 1": lambda rng, n: 20.0 + rng.normal(0.0, 1.0, n),
    "Pareto a=3, plus 1": lambda rng, n: rng.pareto(3.0, n) + 1.0,
    "exponential": lambda rng, n: rng.exponential(1.0, n),
    "gamma k=2": lambda rng, n: rng.gamma(2.0, 1.0, n),
    "Weibull k=1.5": lambda rng, n: rng.weibull(1.5, n),
    "Poisson mean 5, plus 1": lambda rng, n: rng.poisson(5.0, n) + 1.0,
    "Poisson mean 5 (zeros)": lambda rng, n: rng.poisson(5.0, n).astype(float),
    "log-normal counts (rounded)": lambda rng, n: np.round(rng.lognormal(3.0, 1.0, n)) + 1.0,
    "negative binomial, mean 30, shape 3": lambda rng, n: rng.poisson(rng.gamma(3.0, 10.0, n))
    .astype(float),
    "mostly 0, bursts of ~20": lambda rng, n: np.where(rng.random(n) < 0.1,
                                                       rng.poisson(20.0, n), 0).astype(float),
}


def decision(values: np.ndarray, readings: int, second_look: int = 0) -> float:
    """The kernel's decision (``S_MODE``) for this stream at ``readings`` readings, and at
    ``second_look`` readings for one that stayed raw then (0: no second look)."""
    row = np.zeros(N_SCALE)
    for v in values.tolist():
        if row[S_MODE] not in (UNDECIDED, RAW_PENDING):
            break
        scale_learn(row, v, readings, second_look)
    return float(row[S_MODE])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--readings", type=int, nargs="+", default=[30, 50, 100, 200])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"share of {args.draws} draws that turn logarithmic / root, by readings before the "
          f"decision (shipped: {SCALE_READINGS}):")
    shipped = f"{SCALE_READINGS}, {SECOND_LOOK_READINGS}"
    print(f"  {'distribution':36s}" + "".join(f"{n:>14d}" for n in args.readings)
          + f"{shipped:>14s}")
    for name, draw in KINDS.items():
        cells = []
        for n in args.readings:
            modes = np.array([decision(draw(rng, n), n) for _ in range(args.draws)])
            cells.append(f"{np.mean(modes == LOG):.3f} / {np.mean(modes == ROOT):.3f}")
        modes = np.array([decision(draw(rng, SECOND_LOOK_READINGS), SCALE_READINGS,
                                   SECOND_LOOK_READINGS) for _ in range(args.draws)])
        cells.append(f"{np.mean(modes == LOG):.3f} / {np.mean(modes == ROOT):.3f}")
        print(f"  {name:36s}" + "".join(f"{cell:>14s}" for cell in cells))


if __name__ == "__main__":
    main()

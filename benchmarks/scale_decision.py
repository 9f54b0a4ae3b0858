"""How often each kind of stream turns logarithmic (``edge_ml.kernels.scale``), by how many
readings the decision waits for.

Draws many short streams of each distribution and feeds each, reading by reading, to the
kernel's own ``scale_learn`` with the decision length under test (the pipeline decides at
``SCALE_READINGS``). Prints the share of draws that turn logarithmic (docs/benchmarks.md,
round 10).

Usage: python benchmarks/scale_decision.py [--draws 2000] [--readings 30 50 100 200]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np

from edge_ml.kernels.scale import LOG, N_SCALE, S_MODE, SCALE_READINGS, UNDECIDED, scale_learn

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
}


def turns(values: np.ndarray, readings: int) -> bool:
    """Whether the kernel's decision at ``readings`` readings turns this stream logarithmic."""
    row = np.zeros(N_SCALE)
    for v in values.tolist():
        if row[S_MODE] != UNDECIDED:
            break
        scale_learn(row, v, readings)
    return bool(row[S_MODE] == LOG)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--readings", type=int, nargs="+", default=[30, 50, 100, 200])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"share of {args.draws} draws that turn logarithmic, by readings before the decision "
          f"(shipped: {SCALE_READINGS}):")
    print(f"  {'distribution':30s}" + "".join(f"{n:>8d}" for n in args.readings))
    for name, draw in KINDS.items():
        shares = [np.mean([turns(draw(rng, n), n) for _ in range(args.draws)])
                  for n in args.readings]
        print(f"  {name:30s}" + "".join(f"{share:8.3f}" for share in shares))


if __name__ == "__main__":
    main()

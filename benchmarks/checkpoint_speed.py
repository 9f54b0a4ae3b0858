"""Checkpoint size, save and load time for 1,000 streams at default parameters.

Run: ``.venv/bin/python benchmarks/checkpoint_speed.py [--streams 1000]``. "worker pause" is
what the daemon's worker spends on a save (flush + array copies + the SQLite insert); encoding
runs on a helper thread meanwhile.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_ml.checkpoint_format import decode, encode
from edge_ml.checkpointer import resume
from edge_ml.config import parse_config
from edge_ml.pipeline import Pipeline
from edge_ml.state import compatibility, export_state
from edge_ml.storage import Storage


def _array_bytes(part: object) -> int:
    """Bytes of every array in a document part (the devices part nests names and arrays)."""
    if isinstance(part, np.ndarray):
        return part.nbytes
    if isinstance(part, dict):
        return sum(_array_bytes(v) for v in part.values())
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--readings", type=int, default=600, help="per stream")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        storage = Storage(Path(tmp) / "bench.db")
        pipeline = Pipeline(parse_config({}), storage)
        rng = np.random.default_rng(0)
        names = [f"sensors/n{i}/t" for i in range(args.streams)] * args.readings
        n = len(names)
        for lo in range(0, n, 65536):
            hi = min(n, lo + 65536)
            pipeline.process_readings(names[lo:hi], np.arange(lo, hi, dtype=np.float64),
                                      rng.normal(20, 1, hi - lo))
        pipeline.flush()
        # The daemon's Checkpointer reuses its snapshot buffers: the first checkpoint of a run
        # pays for fresh pages, every later one copies into warm buffers.
        pool: dict[str, np.ndarray] = {}
        f0 = time.perf_counter()
        export_state(pipeline, pool)
        f1 = time.perf_counter()
        pipeline.process_readings(names[: args.streams], np.full(args.streams, float(n)),
                                  rng.normal(20, 1, args.streams))
        t0 = time.perf_counter()
        document = export_state(pipeline, pool)
        t1 = time.perf_counter()
        encoded = encode(document)
        t2 = time.perf_counter()
        storage.save_checkpoint(encoded.blob, encoded.header, "bench", encoded.checksum, 3)
        t3 = time.perf_counter()
        decode(encoded.blob, compatibility(pipeline))
        t4 = time.perf_counter()
        fresh = Pipeline(parse_config({}), storage)
        t5 = time.perf_counter()
        resume(fresh)
        t6 = time.perf_counter()
        raw = _array_bytes(document["state"])
        print("| streams | state (raw) | checkpoint | first snapshot | snapshot (worker) "
              "| encode (helper thread) "
              "| SQLite insert (worker) | decode | resume from DB |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        print(f"| {args.streams:,} | {raw / 1e6:.1f} MB | {len(encoded.blob) / 1e6:.2f} MB "
              f"| {(f1 - f0) * 1e3:.1f} ms | {(t1 - t0) * 1e3:.1f} ms | {(t2 - t1) * 1e3:.0f} ms "
              f"| {(t3 - t2) * 1e3:.1f} ms "
              f"| {(t4 - t3) * 1e3:.0f} ms | {(t6 - t5) * 1e3:.0f} ms |")
        storage.close()


if __name__ == "__main__":
    main()

"""Peak RSS while a checkpoint of many streams is encoded (and decoded), in this process.

Run: ``PYTHONPATH=<tree> .venv/bin/python benchmarks/checkpoint_rss.py [--streams 10000]``, one
fresh process per build. It builds a pipeline at default parameters holding ``--streams``
streams (``--readings`` each, one per stream per round, as ``load.py``'s 10,000-stream phase
sends), takes the snapshot a daemon takes (``export_state`` without a pool: above
``POOL_KEEP_BYTES`` the daemon keeps none), then encodes it ``--repeats`` times. Before each
encode the kernel's high-water mark is reset (``/proc/self/clear_refs`` ``5``), so "peak" is
the highest RSS during that encode alone (VmHWM), beside the RSS just before it. The same for
one decode of the blob, with the size of the arrays it returns (what a decode cannot do without:
the rest of its rise is the decoder's own). The blob's sha256 (``created_at`` set to 0) compares
builds byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from typing import Any

import numpy as np

from edge_ml.checkpoint_format import decode, encode
from edge_ml.config import parse_config
from edge_ml.pipeline import Pipeline
from edge_ml.state import export_state


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _array_bytes(obj: Any) -> int:
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, dict):
        return sum(_array_bytes(value) for value in obj.values())
    if isinstance(obj, list):
        return sum(_array_bytes(value) for value in obj)
    return 0


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # VmHWM := VmRSS (Linux 4.0 on)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--readings", type=int, default=3, help="per stream")
    parser.add_argument("--repeats", type=int, default=3, help="encodes (best time is kept)")
    args = parser.parse_args()
    pipeline = Pipeline(parse_config({}), None)
    rng = np.random.default_rng(0)
    names = [f"sensors/many/n{i}" for i in range(args.streams)]
    for r in range(args.readings):
        pipeline.process_readings(names, np.full(args.streams, 1.7e9 + r),
                                  rng.normal(20, 1, args.streams))
    pipeline.flush()
    document = export_state(pipeline)
    document["header"]["created_at"] = 0.0  # the one field that differs run to run
    times, peaks, blob = [], [], b""
    for _ in range(args.repeats):
        blob = b""  # the previous blob is not held across the next encode
        before = _status_mb("VmRSS")
        _reset_peak()
        t0 = time.perf_counter()
        blob = encode(document).blob
        times.append(time.perf_counter() - t0)
        peaks.append(_status_mb("VmHWM"))
    before_decode = _status_mb("VmRSS")
    _reset_peak()
    t0 = time.perf_counter()
    decoded = decode(blob)
    decode_s = time.perf_counter() - t0
    decode_peak = _status_mb("VmHWM")
    arrays_mb = _array_bytes(decoded) / 2**20
    print(f"streams={args.streams} blob_mb={len(blob) / 1e6:.2f} "
          f"sha256={hashlib.sha256(blob).hexdigest()[:16]}")
    print(f"encode: rss_before_mb={before:.0f} peak_mb={max(peaks):.0f} "
          f"rise_mb={max(peaks) - before:.0f} best_ms={min(times) * 1e3:.0f} "
          f"all_ms={','.join(f'{t * 1e3:.0f}' for t in times)}")
    print(f"decode: rss_before_mb={before_decode:.0f} peak_mb={decode_peak:.0f} "
          f"rise_mb={decode_peak - before_decode:.0f} arrays_mb={arrays_mb:.0f} "
          f"ms={decode_s * 1e3:.0f}")


if __name__ == "__main__":
    main()

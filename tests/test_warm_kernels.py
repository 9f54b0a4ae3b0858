"""The daemon compiles its kernels before it subscribes (edge_ml.pipeline.warm_kernels).

In a fresh interpreter (other tests compile kernels in this one): after ``warm_kernels`` a live
mix of bare numbers, a four-field device, an alert and a NaN compiles nothing more. A kernel the
warm-up misses would be compiled by the first live batch, while a persistent session's backlog
arrives and the inbox drops it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.needs_jit

SCRIPT = r"""
import importlib, json, pkgutil
from numba.core.registry import CPUDispatcher
import edge_ml.kernels as kernels
from edge_ml.config import parse_config
from edge_ml.pipeline import Pipeline, warm_kernels

modules = [importlib.import_module(f"edge_ml.kernels.{m.name}")
           for m in pkgutil.iter_modules(kernels.__path__)]

def compiled():
    return {f"{m.__name__}.{name}": len(obj.signatures) for m in modules
            for name, obj in vars(m).items() if isinstance(obj, CPUDispatcher)}

config = parse_config({})
warm_kernels(config)
before = compiled()
live = Pipeline(config, None)
t0 = 1.7e9
messages = [(f"sensors/s{i % 50}", str(float(i % 13)).encode(), t0 + i) for i in range(5000)]
messages += [("pump/1", json.dumps({"c": i % 3, "f": i % 5, "p": 1.5, "v": 2}).encode(), t0 + i)
             for i in range(2000)]
messages += [("sensors/s1", b"1e12", t0 + 9000), ("sensors/s2", b"nan", t0 + 9001)]
for k in range(0, len(messages), 256):
    live.process_messages(messages[k:k + 256])
after = compiled()
print(json.dumps({"compiled_by_live": sorted(k for k in after if after[k] != before[k]),
                  "used": sum(1 for v in after.values() if v)}))
"""


def test_a_live_batch_after_the_warm_up_compiles_nothing() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=600, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["used"] >= 4  # detect, joint, alert and stats batches at least
    assert result["compiled_by_live"] == []

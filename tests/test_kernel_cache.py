"""The Numba cache folder follows every kernel source, so no stale compiled code is loaded."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_ml.kernels import PACKAGE_DIR, cache_dir, kernel_fingerprint, kernel_sources


def test_fingerprint_changes_with_any_kernel_file(tmp_path: Path) -> None:
    package = tmp_path / "edge_ml"
    for path in kernel_sources():
        copy = package / path.relative_to(PACKAGE_DIR)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, copy)
    before = kernel_fingerprint(package)
    assert kernel_fingerprint(package) == before  # stable
    for changed in ("kernels/hst.py", "replay/kernels.py"):  # a callee only; replay's own
        path = package / changed
        kept = path.read_text()
        path.write_text(kept + "\n# a change\n")
        assert kernel_fingerprint(package) != before, changed
        path.write_text(kept)
    assert kernel_fingerprint(package) == before


def test_every_module_of_kernels_is_fingerprinted() -> None:
    """Every source file with an @njit is one of kernel_sources (the cache would go stale)."""
    with_kernels = {path for path in PACKAGE_DIR.rglob("*.py") if "@njit" in path.read_text()}
    assert with_kernels and with_kernels <= set(kernel_sources())
    assert PACKAGE_DIR / "replay" / "kernels.py" in with_kernels


@pytest.mark.parametrize("module", ["kernels.stats", "replay.kernels"])
def test_cache_lands_in_the_fingerprinted_folder(tmp_path: Path, module: str) -> None:
    calls = {
        "kernels.stats": (
            "from edge_ml.kernels.stats import record_batch\n"
            "z = np.zeros(1)\n"
            "record_batch(np.zeros(1, np.int64), z, z, z, np.zeros(1, np.uint8), "
            "np.zeros(1, np.int64), z.copy(), z.copy(), z.copy(), z.copy(), "
            "np.zeros(1, np.uint8))\n"),
        # Outside the kernels folder: its cache must land in the same fingerprinted folder.
        "replay.kernels": (
            "from edge_ml.replay.kernels import parse_rows\n"
            "parse_rows(np.frombuffer(b'1,2\\n', np.uint8), 0, 1, True, np.zeros(1), "
            "np.zeros((1, 1)), np.zeros((1, 5), np.int64))\n"),
    }
    code = "import numpy as np\n" + calls[module] + (
        "from numba.core import config; print(config.CACHE_DIR)\n")
    env = {"NUMBA_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120, check=True)
    folder = Path(out.stdout.strip())
    assert folder == Path(cache_dir(str(tmp_path)))
    name = module.rsplit(".", 1)[1]
    assert any(folder.rglob(f"{name}.*.nbi")), f"nothing of {module} was cached there"


def test_kernels_run_without_scipy_and_scipy_still_imports_later() -> None:
    """prepare() keeps SciPy out of Numba's setup only: nothing that uses it later breaks."""
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from edge_ml.config import parse_config\n"
        "from edge_ml.pipeline import Pipeline\n"
        "p = Pipeline(parse_config({}))\n"
        "p.process_readings(['a'] * 400, np.arange(400.0), np.sin(np.arange(400.0)))\n"
        "print('scipy.linalg' in sys.modules)\n"
        "from numba import njit\n"
        "print(njit(lambda a: np.dot(a, a))(np.ones(3)))\n"
        "import scipy.linalg\n"
        "print(scipy.linalg.norm(np.ones(4)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True)
    assert out.stdout.split() == ["False", "3.0", "2.0"]


RELEASE_SCRIPT = """
import json, sys
import numpy as np
from edge_ml.config import parse_config
from edge_ml.kernels import release_compiler_pages
from edge_ml.pipeline import Pipeline

def rss_file_mb():
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024

def run(release):
    p = Pipeline(parse_config({}))
    rng = np.random.default_rng(0)
    names = [f"s{i}" for i in range(20)]
    levels, before, advised, after = [], 0.0, 0, 0.0
    for r in range(400):
        out = p.process_readings(names, np.full(20, 1.7e9 + 60.0 * r), rng.normal(size=20))
        levels.append(out.levels)
        if r == 0 and release:
            before = rss_file_mb()
            advised = release_compiler_pages()
            after = rss_file_mb()
    return np.concatenate(levels), before, advised, after

plain = run(False)[0]
levels, before, advised, after = run(True)
print(json.dumps({"same": bool(np.array_equal(plain, levels)), "before": before,
                  "after": after, "advised": advised, "end": rss_file_mb()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux madvise")
def test_releasing_llvm_pages_frees_memory_and_changes_no_result() -> None:
    out = subprocess.run([sys.executable, "-c", RELEASE_SCRIPT], capture_output=True, text=True,
                         timeout=300, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["same"]  # the kernels run on, and compute the same levels
    assert got["advised"] > 50 * 2**20  # libllvmlite's mapping
    # How much goes is not asserted: the kernel reclaims only pages no other process maps, and
    # this test's own process maps libllvmlite too (after a whole suite, most of the same
    # pages). benchmarks/load.py measures the daemon alone: 321 -> 220 MB at 10,000 streams.
    assert got["after"] <= got["before"]
    assert got["end"] < got["after"] + 10  # the kernels do not need the pages back

"""The Numba cache folder follows every kernel source, so no stale compiled code is loaded."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from edge_ml.kernels import KERNEL_DIR, cache_dir, kernel_fingerprint


def test_fingerprint_changes_with_any_kernel_file(tmp_path: Path) -> None:
    folder = tmp_path / "kernels"
    shutil.copytree(KERNEL_DIR, folder, ignore=shutil.ignore_patterns("__pycache__"))
    before = kernel_fingerprint(folder)
    assert kernel_fingerprint(folder) == before  # stable
    hst = folder / "hst.py"
    hst.write_text(hst.read_text() + "\n# a change in a callee only\n")
    assert kernel_fingerprint(folder) != before


def test_cache_lands_in_the_fingerprinted_folder(tmp_path: Path) -> None:
    code = (
        "import numpy as np\n"
        "from edge_ml.kernels.stats import record_batch\n"
        "z = np.zeros(1)\n"
        "record_batch(np.zeros(1, np.int64), z, z, z, np.zeros(1, np.uint8), "
        "np.zeros(1, np.int64), z.copy(), z.copy(), z.copy(), z.copy(), np.zeros(1, np.uint8))\n"
        "from numba.core import config; print(config.CACHE_DIR)\n"
    )
    env = {"NUMBA_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120, check=True)
    folder = Path(out.stdout.strip())
    assert folder == Path(cache_dir(str(tmp_path)))
    assert any(folder.rglob("*.nbi")), "nothing was cached there"


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

"""Numba kernels: every hot loop of the pipeline, arrays in and arrays out.

Numba's on-disk cache (``cache=True``) is keyed on each kernel's *own* source file, not on the
files of the kernels it calls: after an upgrade that changes ``hst.py`` alone, a cached
``detect_batch`` would go on running the old HST code on new arrays, silently. So the cache
lives in a folder named after a fingerprint of every kernel source file (this package's, and the
``kernels.py`` of a package that keeps its own, as :mod:`edge_ml.replay.kernels`): any change to
any kernel gives a fresh folder, and nothing stale can be loaded. The base folder is
``$NUMBA_CACHE_DIR`` (systemd's CacheDirectory in the unit) or this package's ``__pycache__``.
A module of kernels elsewhere imports this package before its first ``@njit``.

The kernels the pipeline calls from Python (``detect_batch``, ``joint_batch``, ``alert_batch``,
the ``stats`` and ``page_hinkley`` batches) are ``nogil=True``: they touch only arrays, and while
the worker thread is inside one, paho's network thread can go on reading the socket instead of
waiting for the interpreter lock (the daemon's two threads overlap).
"""

from __future__ import annotations

import gc
import hashlib
import os
import sys
from pathlib import Path

from numba.core import config as _numba_config

KERNEL_DIR = Path(__file__).resolve().parent
PACKAGE_DIR = KERNEL_DIR.parent


def kernel_sources(package: Path = PACKAGE_DIR) -> list[Path]:
    """Every source file of Numba kernels under ``package`` (the ``edge_ml`` folder): the
    ``*.py`` files of its ``kernels`` folder and the ``kernels.py`` of each subpackage."""
    return sorted(package.glob("kernels/*.py")) + sorted(package.glob("*/kernels.py"))


def kernel_fingerprint(package: Path = PACKAGE_DIR) -> str:
    """A short hash of every kernel source file under ``package`` (paths and contents)."""
    digest = hashlib.sha256()
    for path in kernel_sources(package):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cache_dir(base: str | None = None) -> str:
    """The Numba cache folder for this exact set of kernel sources."""
    root = base or os.environ.get("NUMBA_CACHE_DIR") or str(KERNEL_DIR / "__pycache__")
    return os.path.join(root, f"edge-ml-kernels-{kernel_fingerprint()}")


# Must be set before any kernel module is imported: Numba picks the cache folder when a
# ``cache=True`` function is decorated. (Where the folder cannot be written Numba falls back
# to its default locations, as it would anyway.)
_numba_config.CACHE_DIR = cache_dir()


_prepared = False


def prepare() -> None:
    """Set up Numba's CPU target now, as the first kernel call would, but without SciPy.

    The first call of any kernel, even one loaded from the cache, makes Numba import and
    register its whole library of implementations (~0.3 s). Among them ``numba.np.arraymath``
    checks for a BLAS by importing ``scipy.linalg``: another ~0.2 s and ~15 MB of resident
    memory that no kernel here uses. With SciPy hidden for that one check, Numba notes "no
    BLAS" and uses a plain loop for the inner product of ``np.correlate``/``np.convolve`` in
    code compiled later in this process (no kernel here calls them); ``np.dot`` and
    ``np.linalg`` import SciPy when first compiled, as usual, and later imports of SciPy (the
    river backend) are untouched. Idempotent; a no-op once Numba's target is set up.
    """
    global _prepared
    if _prepared:
        return
    _prepared = True
    from numba.core.registry import cpu_target

    # None in sys.modules makes ``import`` raise ImportError, which Numba's check catches.
    hidden = next((name for name in ("scipy", "scipy.linalg") if name not in sys.modules), None)
    if hidden:
        sys.modules[hidden] = None  # type: ignore[assignment]
    # The setup builds ~100,000 objects that live as long as the process: the collector's
    # passes over them while they are built free nothing and cost ~10% of it.
    collecting = gc.isenabled()
    gc.disable()
    try:
        cpu_target.target_context.refresh()
    finally:
        if collecting:
            gc.enable()
        if hidden and sys.modules.get(hidden, False) is None:
            del sys.modules[hidden]


# madvise(2) advice: reclaim these pages now (Linux 5.4+; older kernels answer EINVAL).
_MADV_PAGEOUT = 21


def release_compiler_pages() -> int:
    """Hand LLVM's startup pages back to the OS once every kernel is loaded; bytes advised.

    Importing Numba and linking the cached kernels touch ~100 MB of ``libllvmlite``'s code and
    data, and the pages stay resident, but a process that only runs loaded kernels needs ~1 MB
    of them (measured: 10,000 streams went from 300 to 204 MB RSS in-process, and the resident
    file pages stayed at ~25 MB through 400 further batches with drift and alerts). They are
    clean file pages, so the kernel drops them and reads back any that are touched again (a
    kernel compiled later pays a few page faults). A no-op where ``madvise`` or the advice is
    not available.
    """
    if not sys.platform.startswith("linux"):
        return 0
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
        maps = Path("/proc/self/maps").read_text().splitlines()
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    advised = 0
    for line in maps:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or "libllvmlite" not in fields[5]:
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if madvise(start, end - start, _MADV_PAGEOUT) != 0:
            return advised  # unsupported here: leave the rest alone
        advised += end - start
    return advised

"""Numba kernels: every hot loop of the pipeline, arrays in and arrays out.

Numba's on-disk cache (``cache=True``) is keyed on each kernel's *own* source file, not on the
files of the kernels it calls: after an upgrade that changes ``hst.py`` alone, a cached
``detect_batch`` would go on running the old HST code on new arrays, silently. So the cache of
this package lives in a folder named after a fingerprint of every kernel source file: any change
to any kernel gives a fresh folder, and nothing stale can be loaded. The base folder is
``$NUMBA_CACHE_DIR`` (systemd's CacheDirectory in the unit) or this package's ``__pycache__``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from numba.core import config as _numba_config

KERNEL_DIR = Path(__file__).resolve().parent


def kernel_fingerprint(folder: Path = KERNEL_DIR) -> str:
    """A short hash of every ``*.py`` file in ``folder`` (names and contents)."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.py")):
        digest.update(path.name.encode())
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

"""A stream's recent anomaly level as one line of block characters (``edge-ml status``/``alerts``).

The daemon keeps, per stream, a ring of :data:`MINUTES` one-minute maxima of the level
(:class:`edge_ml.streams.StreamRegistry`, updated by :func:`edge_ml.kernels.stats.recent_batch`),
each quantised to one byte: 0 for a minute without a scored reading, ``1 + round(level * 254)``
otherwise. The stream row stores it as :data:`BLOB_BYTES` bytes: the newest minute's number
(epoch minutes, big-endian uint32), then the ring's 60 bytes (minute ``m`` in byte
``m % 60``). NumPy and the standard library only.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Sequence

import numpy as np

MINUTES = 60  # the ring: the last hour, a minute a cell
BLOB_BYTES = 4 + MINUTES
BLOCKS = "▁▂▃▄▅▆▇█"
LEVEL_STEPS = 254  # level 0..1 as 1..255 in a byte; 0 = no scored reading that minute


def render(levels: Sequence[float | None]) -> str:
    """One block per level in [0, 1]; a missing (None/NaN) level is a space.

    Block ``k`` stands for levels in ``(k/8, (k+1)/8]`` (0 itself is the lowest block).

    Examples
    --------
    >>> render([0, 0.5, 1])
    '▁▄█'
    >>> render([0.3, float("nan"), 0.9])
    '▃ █'
    """
    out = []
    for level in levels:
        if level is None or not math.isfinite(level):
            out.append(" ")
            continue
        k = math.ceil(min(max(level, 0.0), 1.0) * len(BLOCKS)) - 1
        out.append(BLOCKS[max(k, 0)])
    return "".join(out)


def encode_rows(ring: np.ndarray, minute: np.ndarray) -> list[bytes]:
    """The stored form of some slots' rings: ``ring`` uint8[k, 60], ``minute`` int64[k]."""
    if not len(minute):
        return []
    head = (minute & 0xFFFFFFFF).astype(">u4").view(np.uint8).reshape(-1, 4)
    # The cells as the ring holds them (minute m in cell m % 60; decode puts them in order),
    # in one buffer cut into rows: a pack and a tobytes per stream, or reordering the cells
    # here, cost 30-70 ms a flush of 10,000 streams on the worker.
    buf = np.concatenate([head, ring], axis=1).tobytes()
    return [buf[i:i + BLOB_BYTES] for i in range(0, len(buf), BLOB_BYTES)]


def decode(blob: bytes | None, now: float | None = None) -> list[float]:
    """The 60 one-minute levels ending at the minute of ``now`` (default: the clock), oldest
    first, NaN where no reading was scored; minutes after the stream's newest are NaN.

    A stream whose newest minute lies ahead of ``now`` (its clock runs fast) is shown up to
    that minute instead.
    """
    if not blob or len(blob) != BLOB_BYTES:
        return [math.nan] * MINUTES
    newest = struct.unpack(">I", blob[:4])[0]
    end = max(int((time.time() if now is None else now) // 60), newest)
    out = []
    for m in range(end - MINUTES + 1, end + 1):
        q = blob[4 + m % MINUTES]
        # Minutes after the newest one (quiet since), or older than its hour, are blank.
        fresh = newest - MINUTES < m <= newest
        out.append((q - 1) / LEVEL_STEPS if fresh and q else math.nan)
    return out


def sparkline(blob: bytes | None, now: float | None = None) -> str:
    """:func:`render` of :func:`decode`: the last hour as 60 characters."""
    return render(decode(blob, now))

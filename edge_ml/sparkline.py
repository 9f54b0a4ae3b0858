"""A stream's recent anomaly level as one line of block characters (``edge-ml status``/``alerts``).

The daemon keeps, per stream, a ring of :data:`MINUTES` one-minute maxima of the level
(:class:`edge_ml.streams.StreamRegistry`, updated by :func:`edge_ml.kernels.stats.recent_batch`),
each quantised to one byte: 0 for a minute without a scored reading, ``1 + round(level * 254)``
otherwise. The stream row stores it as :data:`BLOB_BYTES` bytes: the newest minute's number
(epoch minutes, big-endian uint32), then the 60 bytes oldest first. NumPy and the standard
library only.
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
    # Cell of minute m is m % 60: the oldest of the hour ending at the newest minute comes first.
    order = (minute[:, None] + 1 + np.arange(MINUTES)[None, :]) % MINUTES
    ordered = np.take_along_axis(ring, order, axis=1)
    return [struct.pack(">I", int(m) & 0xFFFFFFFF) + cells.tobytes()
            for m, cells in zip(minute.tolist(), ordered, strict=True)]


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
    shift = end - newest  # quiet minutes since the newest one
    cells = [math.nan if q == 0 else (q - 1) / LEVEL_STEPS for q in blob[4:]]
    if shift >= MINUTES:
        return [math.nan] * MINUTES
    return cells[shift:] + [math.nan] * shift


def sparkline(blob: bytes | None, now: float | None = None) -> str:
    """:func:`render` of :func:`decode`: the last hour as 60 characters."""
    return render(decode(blob, now))

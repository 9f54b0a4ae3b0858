"""``edge-ml replay``: CSV files in, scored CSV files out, through the daemon's pipeline.

The data flows through four modules: :mod:`~edge_ml.replay.reader` (the input file as chunks of
timestamps and values, with file and line in every error), :mod:`~edge_ml.replay.loop` (the
chunks through the :class:`~edge_ml.pipeline.Pipeline`), :mod:`~edge_ml.replay.writer` (the
scored rows, byte for byte as ``csv.writer`` writes them), and :mod:`~edge_ml.replay.kernels`
(the Numba parser and formatter behind the reader and writer).
"""

from __future__ import annotations

from edge_ml.replay.loop import ReplaySummary, replay_csv, replay_tree

__all__ = ["ReplaySummary", "replay_csv", "replay_tree"]

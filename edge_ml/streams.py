"""Stream names to slot indices, and the per-stream statistics shown by ``edge-ml status``.

A stream appears on its first reading and keeps its slot for the life of the process (and
across checkpoints). Every other per-stream array in the pipeline is indexed by this slot.
"""

from __future__ import annotations

import numpy as np

from edge_ml.kernels.stats import recent_batch, record_batch
from edge_ml.slots import SlotArrays, SlotField
from edge_ml.sparkline import LEVEL_STEPS, MINUTES, encode_rows

# The last hour of each stream's level for the sparkline of ``edge-ml status`` (one byte a
# minute, edge_ml.sparkline). Not in checkpoints: a restart or reload starts an empty hour,
# and checkpoints of earlier builds load unchanged.
RECENT_FIELDS = (SlotField("ring", np.uint8, 0, (MINUTES,)), SlotField("minute", np.int64))


class StreamRegistry:
    """Slots for stream names, grown by doubling, with counts and last values per stream."""

    def __init__(self, capacity: int = 16) -> None:
        self.slot_of: dict[str, int] = {}
        self.names: list[str] = []
        self.stats = SlotArrays(
            [
                SlotField("readings", np.int64),
                SlotField("first_ts", np.float64, np.nan),
                SlotField("last_ts", np.float64, np.nan),
                SlotField("last_value", np.float64, np.nan),
                SlotField("last_level", np.float64, np.nan),
                SlotField("last_warming", np.uint8, 1),
                # Readings already added to the ``streams`` table (which accumulates counts).
                SlotField("flushed_readings", np.int64),
            ],
            capacity,
        )
        self.recent = SlotArrays(RECENT_FIELDS, capacity)
        self.keep_recent = True  # a replay without storage turns it off (no stream rows)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def capacity(self) -> int:
        return self.stats.capacity

    def resolve(self, names: list[str]) -> np.ndarray:
        """Slot of each name (new names get the next free slots); int64 array."""
        slot_of = self.slot_of
        # New names get slots in order of first appearance; dict.fromkeys and map run in C
        # (a Python loop per reading cost ~0.3 us, a tenth of a replay's time per row).
        if names and names.count(names[0]) == len(names):  # one stream (replay): ~40x cheaper
            distinct = {names[0]: None}
        else:
            distinct = dict.fromkeys(names)
        for name in distinct:
            if name not in slot_of:
                slot_of[name] = len(self.names)
                self.names.append(name)
        self.stats.grow(len(self.names))
        self.recent.grow(len(self.names))
        if len(distinct) == 1:
            return np.full(len(names), slot_of[names[0]], dtype=np.int64)
        return np.fromiter(map(slot_of.__getitem__, names), dtype=np.int64, count=len(names))

    def beyond(self, names: list[str], limit: int) -> set[str]:
        """The new names among ``names`` that would take the registry past ``limit`` streams.

        New names are admitted in order of first appearance (as :meth:`resolve` gives them
        slots) while there is room; the rest are returned. Empty in the common case, found
        without looking at the names when the batch cannot reach the limit.

        Examples
        --------
        >>> r = StreamRegistry()
        >>> _ = r.resolve(["a", "b"])
        >>> sorted(r.beyond(["a", "c", "d", "c", "e", "b"], limit=3))
        ['d', 'e']
        """
        room = limit - len(self.names)
        if len(names) <= room:
            return set()
        slot_of = self.slot_of
        new = [name for name in dict.fromkeys(names) if name not in slot_of]
        return set(new[max(room, 0):])

    def record(
        self, slots: np.ndarray, ts: np.ndarray, values: np.ndarray, levels: np.ndarray,
        warming: np.ndarray,
    ) -> None:
        s = self.stats
        record_batch(slots, ts, values, levels, warming, s.readings, s.first_ts, s.last_ts,
                     s.last_value, s.last_level, s.last_warming)
        if self.keep_recent:
            r = self.recent
            recent_batch(slots, ts, levels, warming, r.ring, r.minute, LEVEL_STEPS)

    def recent_rows(self, slots: np.ndarray) -> list[bytes]:
        """The stored sparkline ring of each of ``slots`` (edge_ml.sparkline), in that order."""
        r = self.recent
        return encode_rows(r.ring[slots], r.minute[slots])

    def restore(self, names: list[str], stats: dict[str, np.ndarray]) -> None:
        """Load names and statistics from a checkpoint (replacing what is here)."""
        self.names = list(names)
        self.slot_of = {name: i for i, name in enumerate(self.names)}
        self.stats.restore(stats)
        self.recent = SlotArrays(RECENT_FIELDS, self.stats.capacity)

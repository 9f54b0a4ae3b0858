"""The rows the worker has produced since its last flush, kept bounded while storage fails.

A write that fails (disk full, I/O error, another process holding the lock) leaves the batch
pending for the next flush; readings keep being scored meanwhile, so what waits must not grow
without end.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from edge_ml.records import AlertEvent, DriftEvent, Reject

# A flush that cannot be written keeps at most this many pending rows of each kind; beyond that
# the oldest are dropped and counted (memory on a gateway is finite).
MAX_PENDING_ROWS = 100_000


@dataclass
class PendingWrites:
    """What the worker has produced since the last flush."""

    alerts: list[AlertEvent] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    drift: list[DriftEvent] = field(default_factory=list)
    readings: int = 0
    dropped: int = 0  # pending rows dropped because storage stayed unwritable
    # Rejects among them, per reason: their rows are gone, their counts are still written.
    rejects_dropped: dict[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.alerts or self.rejects or self.drift or self.readings
                    or self.rejects_dropped)

    def bound(self) -> None:
        """Drop the oldest rows beyond ``MAX_PENDING_ROWS`` of each kind, counting them.

        Alert rows go by whole alerts: an alert's open row dropped while its resolve row is
        kept would leave the table a resolve for an alert that never opened.
        """
        excess = len(self.alerts) - MAX_PENDING_ROWS
        if excess > 0:
            rows_of = Counter(a.alert_id for a in self.alerts)
            gone: set[str] = set()
            removed = 0
            for a in self.alerts:  # oldest first, until enough rows go
                if removed >= excess:
                    break
                if a.alert_id not in gone:
                    gone.add(a.alert_id)
                    removed += rows_of[a.alert_id]
            kept = [a for a in self.alerts if a.alert_id not in gone]
            self.dropped += len(self.alerts) - len(kept)
            self.alerts[:] = kept
        for rows in (self.rejects, self.drift):
            excess = len(rows) - MAX_PENDING_ROWS
            if excess > 0:
                if rows is self.rejects:
                    for r in self.rejects[:excess]:
                        self.rejects_dropped[r.reason] = self.rejects_dropped.get(r.reason, 0) + 1
                del rows[:excess]
                self.dropped += excess

"""The alert state machine per stream: threshold, debounce, hysteresis and cooldown.

Per slot: ``above[s]`` consecutive readings at or over the threshold while closed,
``below[s]`` consecutive readings under the resolve threshold while open, ``is_open[s]``,
``peak[s]`` highest level while open, ``closed_at[s]`` time the last alert resolved.
Event codes per reading: 0 nothing, 1 an alert opened, 2 an alert resolved.
"""

from __future__ import annotations

import numpy as np
from numba import njit

NO_EVENT = 0
OPENED = 1
RESOLVED = 2


@njit(cache=True)
def alert_batch(
    slots, levels, ts, warming, above, below, is_open, peak, closed_at,
    threshold, resolve_threshold, debounce, cooldown_s,
):
    """Event code per reading of a micro-batch, updating each stream's alert state in order."""
    events = np.zeros(slots.shape[0], dtype=np.int8)
    for i in range(slots.shape[0]):
        s = slots[i]
        level = levels[i]
        if is_open[s]:
            if level > peak[s]:
                peak[s] = level
            if level < resolve_threshold:
                below[s] += 1
                if below[s] >= debounce:
                    is_open[s] = 0
                    below[s] = 0
                    above[s] = 0
                    closed_at[s] = ts[i]
                    events[i] = RESOLVED
            else:
                below[s] = 0
        elif warming[i]:
            above[s] = 0
        elif level >= threshold:
            above[s] += 1
            # closed_at is NaN until a first alert resolved; comparisons with NaN are False.
            cooling = ts[i] - closed_at[s] < cooldown_s
            if above[s] >= debounce and not cooling:
                is_open[s] = 1
                above[s] = 0
                below[s] = 0
                peak[s] = level
                events[i] = OPENED
        else:
            above[s] = 0
    return events

"""The alert state machine per stream: threshold, debounce, hysteresis and cooldown.

Per slot: ``above[s]`` consecutive readings at or over the threshold while closed,
``below[s]`` consecutive readings under the resolve threshold while open, ``is_open[s]``,
``peak[s]`` highest level while open, ``closed_at[s]`` time the last alert resolved,
``since_open[s]`` readings since the last alert opened.

A new alert needs both cooldowns to have passed: ``cooldown_readings`` since the last one
opened (what keeps one incident from raising a burst of alerts, whatever the sample rate) and
``cooldown_s`` since the last one resolved. Event codes per reading: 0 nothing, 1 an alert
opened, 2 an alert resolved. ``cooling[i]`` is 1 while the stream is inside its cooldown.
"""

from __future__ import annotations

import numpy as np
from numba import njit

OPENED = 1
RESOLVED = 2
# since_open of a stream that never alerted: any cooldown has passed.
NEVER = 1 << 62


@njit(cache=True, nogil=True)
def alert_batch(
    slots, levels, ts, warming, above, below, is_open, peak, closed_at, since_open,
    threshold, resolve_threshold, debounce, cooldown_s, cooldown_readings,
):
    """Event codes and cooldown flags per reading of a micro-batch, updating state in order."""
    events = np.zeros(slots.shape[0], dtype=np.int8)
    cooling = np.zeros(slots.shape[0], dtype=np.uint8)
    for i in range(slots.shape[0]):
        s = slots[i]
        level = levels[i]
        if since_open[s] < NEVER:
            since_open[s] += 1
        if since_open[s] <= cooldown_readings:
            cooling[i] = 1
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
            # A timestamp before closed_at (clock stepped back, or the alert resolved on a
            # far-future reading) is not "recent": otherwise the cooldown would never end.
            since_closed = ts[i] - closed_at[s]
            recent = 0.0 <= since_closed < cooldown_s or cooling[i] == 1
            if above[s] >= debounce and not recent:
                is_open[s] = 1
                above[s] = 0
                below[s] = 0
                peak[s] = level
                since_open[s] = 0
                events[i] = OPENED
        else:
            above[s] = 0
    return events, cooling

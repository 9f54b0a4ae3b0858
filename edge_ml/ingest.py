"""The bounded hand-over from paho's network thread to the worker thread.

``put_many`` is called on the network thread with each burst of messages (``put`` for one);
``drain`` on the worker takes a micro-batch. When the worker falls behind, they wait a little
(back-pressure: with QoS 1 the broker then holds further messages) and only then drop what does
not fit, counting it: load shedding is never silent. A deque with a condition is cheaper per
message than ``queue.Queue``.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from edge_ml.records import Message


class Inbox:
    """A bounded FIFO of :data:`~edge_ml.records.Message` tuples.

    Parameters
    ----------
    maxsize
        Messages held before ``put`` starts waiting, then dropping.
    put_timeout_s
        How long the network thread may wait for room before it drops a message. Kept short:
        paho cannot send keep-alives while it waits.
    """

    def __init__(self, maxsize: int, put_timeout_s: float = 0.5) -> None:
        self.maxsize = maxsize
        self.put_timeout_s = put_timeout_s
        self._items: deque[Message] = deque()
        self._cond = threading.Condition()
        self.dropped = 0
        self.high_water = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, topic: str, payload: bytes, received_at: float) -> bool:
        """Enqueue one message; False when it had to be dropped (counted in ``dropped``)."""
        with self._cond:
            if len(self._items) >= self.maxsize:
                deadline = time.monotonic() + self.put_timeout_s
                while len(self._items) >= self.maxsize:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self.dropped += 1
                        return False
                    self._cond.wait(remaining)
            self._items.append((topic, payload, received_at))
            depth = len(self._items)
            if depth > self.high_water:
                self.high_water = depth
            if depth == 1:
                self._cond.notify_all()
        return True

    def put_many(self, messages: list[Message]) -> int:
        """Enqueue a burst in order; how many were taken (the rest dropped and counted).

        One lock and at most one wake-up for the whole burst. When it does not fit, ``put``'s
        rule for the burst as a whole: wait up to ``put_timeout_s`` for room, then take what
        fits and drop the rest.
        """
        with self._cond:
            items = self._items
            if len(items) + len(messages) > self.maxsize:
                deadline = time.monotonic() + self.put_timeout_s
                while len(items) + len(messages) > self.maxsize:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                room = max(self.maxsize - len(items), 0)
                if room < len(messages):
                    self.dropped += len(messages) - room
                    messages = messages[:room]
            was_empty = not items
            items.extend(messages)
            depth = len(items)
            if depth > self.high_water:
                self.high_water = depth
            if was_empty and depth:
                self._cond.notify_all()
        return len(messages)

    def drain(self, max_items: int, timeout: float, linger_s: float = 0.0) -> list[Message]:
        """Up to ``max_items`` messages, waiting at most ``timeout`` s for the first one.

        With ``linger_s``, once a first message is there, wait up to that long more for the
        batch to fill: each micro-batch has a fixed cost (a few Numba calls), so under load a
        millisecond of patience makes every reading cheaper.
        """
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            if linger_s > 0 and 0 < len(self._items) < max_items:
                # put() notifies only on an empty -> non-empty change, so this is a plain
                # wait that releases the lock for the producer.
                self._cond.wait(linger_s)
            items = self._items
            n = min(len(items), max_items)
            if n == len(items):  # the whole inbox (the usual case under load): one copy
                batch = list(items)
                items.clear()
            else:
                batch = [items.popleft() for _ in range(n)]
            if n:
                self._cond.notify_all()  # room again for a waiting producer
        return batch

    def wake(self) -> None:
        """Wake a worker waiting in :meth:`drain` (used at shutdown)."""
        with self._cond:
            self._cond.notify_all()

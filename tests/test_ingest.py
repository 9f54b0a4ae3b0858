"""``ingest.Inbox``: the bounded hand-over from paho's thread to the worker.

Real threads, real waits: a full inbox makes ``put`` wait up to ``put_timeout_s`` for the
worker, then drop and count; a worker that drains in time loses nothing.
"""

from __future__ import annotations

import threading
import time

import pytest

from edge_ml.ingest import Inbox


def fill(inbox: Inbox, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        assert inbox.put(f"t/{i}", str(i).encode(), float(i))


def test_fifo_order_and_batches_of_at_most_max_items() -> None:
    inbox = Inbox(maxsize=10)
    fill(inbox, 7)
    first = inbox.drain(max_items=4, timeout=0.0)
    second = inbox.drain(max_items=4, timeout=0.0)
    assert [m[0] for m in first + second] == [f"t/{i}" for i in range(7)]
    assert len(first) == 4 and len(second) == 3
    assert first[0] == ("t/0", b"0", 0.0)
    assert len(inbox) == 0 and inbox.dropped == 0 and inbox.high_water == 7


def test_a_full_inbox_waits_put_timeout_then_drops_and_counts() -> None:
    inbox = Inbox(maxsize=3, put_timeout_s=0.2)
    fill(inbox, 3)
    started = time.monotonic()
    assert inbox.put("t/late", b"x", 9.0) is False
    waited = time.monotonic() - started
    assert 0.19 <= waited < 1.0  # it waited for room first, for about put_timeout_s
    assert inbox.dropped == 1
    assert inbox.put("t/later", b"y", 10.0) is False
    assert inbox.dropped == 2
    # What was there is kept, in order; the dropped ones are not.
    assert [m[0] for m in inbox.drain(10, 0.0)] == ["t/0", "t/1", "t/2"]
    assert inbox.high_water == 3


def test_a_waiting_put_gets_in_when_the_worker_drains_in_time() -> None:
    inbox = Inbox(maxsize=2, put_timeout_s=5.0)
    fill(inbox, 2)
    result: list[bool] = []
    producer = threading.Thread(target=lambda: result.append(inbox.put("t/2", b"2", 2.0)))
    producer.start()
    time.sleep(0.1)
    assert producer.is_alive() and not result  # blocked: back-pressure, not a drop
    started = time.monotonic()
    assert len(inbox.drain(1, 0.0)) == 1
    producer.join(2)
    assert result == [True]
    assert time.monotonic() - started < 1.0  # woken by the drain, not by its timeout
    assert inbox.dropped == 0
    assert [m[0] for m in inbox.drain(10, 0.0)] == ["t/1", "t/2"]


def test_a_slow_worker_sheds_load_counted_exactly() -> None:
    """A producer faster than the worker: every message is either delivered or counted."""
    inbox = Inbox(maxsize=50, put_timeout_s=0.001)
    sent = 5_000
    delivered: list[str] = []
    done = threading.Event()

    def worker() -> None:
        while not done.is_set() or len(inbox):
            delivered.extend(m[0] for m in inbox.drain(20, 0.01))
            time.sleep(0.002)  # slower than the producer

    thread = threading.Thread(target=worker)
    thread.start()
    accepted = sum(inbox.put(f"t/{i}", b"", float(i)) for i in range(sent))
    done.set()
    thread.join(10)
    assert inbox.dropped > 0  # it did shed load
    assert accepted + inbox.dropped == sent
    assert len(delivered) == accepted
    assert delivered == sorted(delivered, key=lambda t: int(t[2:]))  # order kept
    assert inbox.high_water == 50


def test_drain_waits_at_most_timeout_for_a_first_message() -> None:
    inbox = Inbox(maxsize=10)
    started = time.monotonic()
    assert inbox.drain(10, timeout=0.15) == []
    assert 0.14 <= time.monotonic() - started < 1.0


def test_drain_returns_as_soon_as_a_first_message_arrives() -> None:
    inbox = Inbox(maxsize=10)
    timer = threading.Timer(0.1, lambda: inbox.put("t/0", b"0", 0.0))
    timer.start()
    started = time.monotonic()
    batch = inbox.drain(10, timeout=5.0)
    assert [m[0] for m in batch] == ["t/0"]
    assert time.monotonic() - started < 2.0
    timer.join()


def test_linger_waits_for_a_batch_to_fill_but_not_when_it_is_full() -> None:
    inbox = Inbox(maxsize=100)
    fill(inbox, 1)
    started = time.monotonic()
    assert len(inbox.drain(10, timeout=0.0, linger_s=0.2)) == 1  # lingered for company
    assert time.monotonic() - started >= 0.19

    fill(inbox, 10)
    started = time.monotonic()
    assert len(inbox.drain(10, timeout=0.0, linger_s=5.0)) == 10  # full: no linger
    assert time.monotonic() - started < 1.0


def test_lingering_collects_what_arrives_meanwhile() -> None:
    inbox = Inbox(maxsize=100)
    fill(inbox, 1)

    def trickle() -> None:
        for i in range(1, 5):
            time.sleep(0.01)
            inbox.put(f"t/{i}", b"", float(i))

    producer = threading.Thread(target=trickle)
    producer.start()
    batch = inbox.drain(10, timeout=0.0, linger_s=0.5)
    producer.join()
    # put() notifies only on empty -> non-empty, so the linger is a plain wait: everything
    # that came within it is in this batch.
    assert [m[0] for m in batch] == [f"t/{i}" for i in range(5)]


@pytest.mark.parametrize("maxsize", [1, 7])
def test_high_water_is_the_deepest_the_inbox_got(maxsize: int) -> None:
    inbox = Inbox(maxsize=maxsize, put_timeout_s=0.0)
    fill(inbox, maxsize)
    assert inbox.put("t/over", b"", 0.0) is False
    inbox.drain(maxsize, 0.0)
    fill(inbox, 1)
    assert inbox.high_water == maxsize and inbox.dropped == 1


def test_put_many_takes_a_burst_in_order_with_one_wake_up() -> None:
    inbox = Inbox(maxsize=10)
    assert inbox.put_many([(f"t/{i}", b"", float(i)) for i in range(4)]) == 4
    assert inbox.put_many([]) == 0
    assert inbox.put_many([("t/4", b"", 4.0)]) == 1
    assert [m[0] for m in inbox.drain(10, 0.0)] == [f"t/{i}" for i in range(5)]
    assert inbox.high_water == 5 and inbox.dropped == 0


def test_a_burst_that_does_not_fit_waits_then_keeps_what_fits_and_counts_the_rest() -> None:
    inbox = Inbox(maxsize=5, put_timeout_s=0.2)
    fill(inbox, 3)
    started = time.monotonic()
    assert inbox.put_many([(f"b/{i}", b"", 0.0) for i in range(4)]) == 2
    assert 0.19 <= time.monotonic() - started < 1.0  # waited for room first
    assert inbox.dropped == 2
    assert [m[0] for m in inbox.drain(10, 0.0)] == ["t/0", "t/1", "t/2", "b/0", "b/1"]


def test_a_burst_waiting_for_room_gets_in_when_the_worker_drains() -> None:
    inbox = Inbox(maxsize=4, put_timeout_s=5.0)
    fill(inbox, 3)
    taken: list[int] = []
    producer = threading.Thread(
        target=lambda: taken.append(inbox.put_many([("b/0", b"", 0.0), ("b/1", b"", 0.0)])))
    producer.start()
    time.sleep(0.1)
    assert producer.is_alive() and not taken
    assert len(inbox.drain(2, 0.0)) == 2
    producer.join(2)
    assert taken == [2] and inbox.dropped == 0
    assert [m[0] for m in inbox.drain(10, 0.0)] == ["t/2", "b/0", "b/1"]


def test_drain_of_the_whole_inbox_and_of_part_of_it_keep_the_order() -> None:
    inbox = Inbox(maxsize=100)
    fill(inbox, 6)
    assert [m[0] for m in inbox.drain(4, 0.0)] == ["t/0", "t/1", "t/2", "t/3"]
    assert [m[0] for m in inbox.drain(100, 0.0)] == ["t/4", "t/5"]
    assert len(inbox) == 0

"""Latest-frame hand-over and approximate-time matching."""

from __future__ import annotations

import threading
import time

from lens_ros.frame_sync import LatestSlot, StampBuffer


def test_latest_slot_keeps_the_newest_and_counts_drops():
    slot = LatestSlot()
    assert slot.put(1)
    assert not slot.put(2) and not slot.put(3)
    assert slot.dropped == 2
    assert slot.take(timeout=0) == 3
    assert slot.take(timeout=0.01) is None


def test_closing_the_slot_wakes_a_waiting_worker():
    slot = LatestSlot()
    got = []
    worker = threading.Thread(target=lambda: got.append(slot.take(timeout=5)))
    worker.start()
    time.sleep(0.05)
    slot.close()
    worker.join(timeout=1)
    assert not worker.is_alive() and got == [None]


def test_nearest_stamp_within_slop():
    buffer = StampBuffer(capacity=3)
    for t in (1.0, 1.1, 1.2, 1.3):
        buffer.add(t, f"m{t}")
    assert buffer.nearest(1.21, 0.02) == "m1.2"
    assert buffer.nearest(1.0, 0.02) is None, "capacity 3 forgets the oldest"
    assert buffer.nearest(1.5, 0.05) is None


def test_wait_nearest_gets_a_message_that_arrives_shortly_after():
    buffer = StampBuffer()
    buffer.add(0.9, "old")
    threading.Timer(0.05, lambda: buffer.add(1.0, "late")).start()
    assert buffer.wait_nearest(1.0, 0.01, timeout_s=1.0) == "late"
    start = time.monotonic()
    assert buffer.wait_nearest(5.0, 0.01, timeout_s=0.1) is None
    assert time.monotonic() - start < 0.5


def test_a_restarted_timeline_replaces_the_old_one():
    buffer = StampBuffer()
    buffer.add(100.0, "a")
    buffer.add(5.0, "b")
    assert buffer.nearest(100.0, 0.1) is None and buffer.nearest(5.0, 0.1) == "b"

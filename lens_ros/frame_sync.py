"""Thread-safe hand-over between ROS callbacks and the node's worker (no ROS imports).

- ``LatestSlot``: one pending item; a newer one replaces it and counts as a drop.
  Callbacks never block and the worker always sees the newest frame.
- ``StampBuffer``: the recent messages of one stream (depth, camera_info), looked up
  by the stamp closest to an image's stamp within a slop: a small approximate-time
  matcher (message_filters is not installable here). The worker may wait briefly
  for a depth frame published just after its colour frame.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from typing import Any


class LatestSlot:
    """A bounded queue of length one with latest-wins semantics."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._closed = False
        self.dropped = 0

    def put(self, item: Any) -> bool:
        """Store ``item``; returns False (and counts a drop) if it replaced an unread one."""
        with self._cond:
            replaced = self._item is not None
            if replaced:
                self.dropped += 1
            self._item = item
            self._cond.notify()
            return not replaced

    def take(self, timeout: float | None = None) -> Any:
        """The pending item (and clear it), or None after ``timeout`` or when closed."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def peek(self) -> Any:
        with self._cond:
            return self._item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def reopen(self) -> None:
        with self._cond:
            self._closed = False
            self._item = None


class StampBuffer:
    """The last ``capacity`` (stamp_s, message) pairs of one stream, in stamp order."""

    def __init__(self, capacity: int = 30) -> None:
        self._cond = threading.Condition()
        self._items: deque[tuple[float, Any]] = deque(maxlen=max(1, capacity))
        self._last_arrival = 0.0

    def add(self, stamp_s: float, msg: Any) -> None:
        with self._cond:
            if self._items and stamp_s < self._items[-1][0]:
                # Out of order (e.g. a bag restarted): start over rather than mix timelines.
                if self._items[-1][0] - stamp_s > 1.0:
                    self._items.clear()
                else:
                    items = list(self._items)
                    bisect.insort(items, (stamp_s, msg), key=lambda item: item[0])
                    self._items = deque(items, maxlen=self._items.maxlen)
                    self._last_arrival = time.monotonic()
                    self._cond.notify_all()
                    return
            self._items.append((stamp_s, msg))
            self._last_arrival = time.monotonic()
            self._cond.notify_all()

    def active(self, within_s: float = 2.0) -> bool:
        """True when the stream delivered something in the last ``within_s`` seconds."""
        with self._cond:
            return bool(self._items) and time.monotonic() - self._last_arrival < within_s

    def nearest(self, stamp_s: float, slop_s: float) -> Any:
        with self._cond:
            return self._nearest(stamp_s, slop_s)

    def latest(self) -> Any:
        with self._cond:
            return self._items[-1][1] if self._items else None

    def wait_nearest(self, stamp_s: float, slop_s: float, timeout_s: float) -> Any:
        """Like ``nearest``, but waits up to ``timeout_s`` while no newer message has arrived yet."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                found = self._nearest(stamp_s, slop_s)
                newest = self._items[-1][0] if self._items else float("-inf")
                remaining = deadline - time.monotonic()
                if found is not None or newest > stamp_s + slop_s or remaining <= 0:
                    return found
                self._cond.wait(remaining)

    def clear(self) -> None:
        with self._cond:
            self._items.clear()

    def _nearest(self, stamp_s: float, slop_s: float) -> Any:
        best, best_dt = None, slop_s
        for t, msg in self._items:
            dt = abs(t - stamp_s)
            if dt <= best_dt:
                best, best_dt = msg, dt
        return best


def stamp_to_s(stamp) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9

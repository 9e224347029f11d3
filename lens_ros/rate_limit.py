"""At most N events a second, on average exactly N when offered more (no ROS imports).

``period - elapsed`` rules ("at least 100 ms since the last one") lose a frame each time the
offered frames are a little early: at 30 Hz with a 10 Hz cap they pass every fourth frame
(7.5 Hz). Here each slot is due one period after the previous slot (an event up to half a
period late keeps the schedule), and a pause banks no slots for a burst afterwards.
"""

from __future__ import annotations

import time


class RateLimiter:
    def __init__(self, max_hz: float) -> None:
        if not max_hz > 0:
            raise ValueError(f"max_hz must be > 0, got {max_hz}")
        self.period = 1.0 / max_hz
        self._due = -float("inf")

    def set_rate(self, max_hz: float) -> None:
        if max_hz > 0 and 1.0 / max_hz != self.period:
            self.period = 1.0 / max_hz
            self._due = -float("inf")

    def wait_s(self, now: float | None = None) -> float:
        """Seconds until the next event may pass (0: now)."""
        now = time.monotonic() if now is None else now
        return max(0.0, self._due - now)

    def take(self, now: float | None = None) -> bool:
        """True (and the slot is used) if an event may pass now."""
        now = time.monotonic() if now is None else now
        if now < self._due:
            return False
        # The next slot is one period after this one's due time when this event was at most
        # half a period late (the average stays at max_hz), else one period after it less half
        # a period (after a pause: no burst beyond one early event).
        self._due = max(self._due, now - self.period / 2) + self.period
        return True

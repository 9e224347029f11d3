"""Counters, rates and latencies the node reports on /diagnostics (no ROS imports)."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

WINDOW = 200  # samples kept per latency series


class NodeStats:
    """Thread-safe bookkeeping: event rates over a sliding window, latency percentiles, drop counts.

    Frame accounting: image_in + requeued = published + dropped_total (+ at most one in flight).
    """

    def __init__(self, rate_window_s: float = 5.0) -> None:
        self._lock = threading.Lock()
        self._rate_window_s = rate_window_s
        self._events: dict[str, deque[float]] = {}
        self._latencies: dict[str, deque[float]] = {}
        self.counts: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self.last_error = ""
        self.last_error_time = 0.0

    def event(self, name: str) -> None:
        now = time.monotonic()
        with self._lock:
            self.counts[name] += 1
            self._events.setdefault(name, deque(maxlen=1000)).append(now)

    def latency(self, name: str, ms: float) -> None:
        with self._lock:
            self._latencies.setdefault(name, deque(maxlen=WINDOW)).append(float(ms))

    def drop(self, reason: str) -> None:
        """A camera frame that got no answer (other rejections are ``event``s)."""
        with self._lock:
            self.drops[reason] += 1

    def error(self, text: str) -> None:
        with self._lock:
            self.last_error = text[:512]
            self.last_error_time = time.monotonic()

    def rate(self, name: str) -> float:
        now = time.monotonic()
        with self._lock:
            times = self._events.get(name)
            if not times:
                return 0.0
            recent = [t for t in times if now - t <= self._rate_window_s]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    def percentiles(self, name: str) -> tuple[float, float, float]:
        """(median, p90, max) of the recent samples, zeros when there are none."""
        with self._lock:
            values = sorted(self._latencies.get(name, ()))
        if not values:
            return 0.0, 0.0, 0.0
        return (values[len(values) // 2], values[min(len(values) - 1, int(len(values) * 0.9))], values[-1])

    def snapshot(self) -> dict[str, object]:
        """Flat key/values for a DiagnosticStatus."""
        out: dict[str, object] = {}
        with self._lock:
            names = sorted(self._events)
            latency_names = sorted(self._latencies)
            counts, drops = dict(self.counts), dict(self.drops)
            last_error = self.last_error
        for name in names:
            out[f"{name}_hz"] = self.rate(name)
        for name in latency_names:
            p50, p90, pmax = self.percentiles(name)
            out[f"{name}_ms_p50"], out[f"{name}_ms_p90"], out[f"{name}_ms_max"] = (p50, p90, pmax)
        for name, value in sorted(counts.items()):
            out[f"{name}_count"] = value
        out["dropped_total"] = sum(drops.values())
        for reason, value in sorted(drops.items()):
            out[f"dropped_{reason}"] = value
        out["last_error"] = last_error
        return out

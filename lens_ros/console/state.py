"""What the console knows about the lens node, shared by the ROS thread and the web server.

No ROS and no HTTP here: the bridge feeds plain values in (``on_*``), the server reads
JSON-able sections out (``sections``) and the latest overlay frame. Every section has a
version number, so each browser tab is sent only what changed since it last looked, and
only the newest value of each (latest wins: nothing queues up behind a slow tab).
Every string kept is bounded and every collection has a fixed size.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass

MAX_TEXT = 8192  # rationale, answers (the node bounds its messages to this too)
MAX_SHORT = 512  # status text, diagnostics values, instruction shown in history
MAX_DIAGNOSTIC_VALUES = 64
SECTIONS = ("status", "stream", "rationale", "pose", "diagnostics", "history")
# Segmentation.STATUS_* codes, by name (the page shows the names).
STATUS_NAMES = {0: "ok", 1: "no object", 2: "parse fallback", 3: "bad input", 4: "error"}
# Answers that refuse an instruction: shown until the next instruction, as the frames after
# them are still answered (tracked) for the instruction before.
REFUSALS = (3, 4)


def _number(text) -> float | None:
    """A diagnostics value as a rounded finite number (None: absent or not a number)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return round(value, 1) if math.isfinite(value) else None


def clip(text: str, limit: int) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class HistoryEntry:
    instruction: str
    asked_at: float  # time.time() of the console receiving it
    source: str  # "console" (typed on the page) or "topic" (published by someone else)
    status: str = "waiting"
    status_text: str = ""
    answer: str = ""
    rationale: str = ""
    reasoning_ms: float = 0.0


@dataclass
class Answer:
    """The fields of one lens_ros/Segmentation the console shows (a plain copy, no ROS types)."""

    instruction: str
    status: int
    status_text: str
    tracked: bool
    rationale: str
    answer: str
    reasoning_ms: float
    total_ms: float
    label: str = ""
    score: float = 0.0
    box: tuple[int, int, int, int] | None = None  # x, y, width, height


class ConsoleState:
    def __init__(self, history_size: int = 20) -> None:
        self._lock = threading.Lock()
        self._versions = dict.fromkeys(SECTIONS, 0)
        self._history: deque[HistoryEntry] = deque(maxlen=history_size)
        self._status: dict = {"status": "waiting", "status_text": "no answer from the lens node yet", "refusal": None}
        self._refusal: dict | None = None
        self._stream = {"text": "", "partials": 0, "final": False}
        self._rationale = ""
        self._pose: dict | None = None
        self._diagnostics: dict = {}
        self._tracking_hz = 0.0  # the lens node's own count (its /diagnostics tracked_hz)
        self._overlay: tuple[int, bytes] | None = None  # (sequence number, JPEG as received)
        self._overlay_seq = 0
        self.on_change: Callable[[str], None] = lambda section: None  # the server's wake-up; outside the lock

    # -- inputs (ROS thread) ----------------------------------------------------------
    def on_instruction(self, text: str, source: str) -> None:
        """An instruction was published (by this console or seen on the topic)."""
        text = clip(text, MAX_SHORT)
        with self._lock:
            if source == "topic" and self._history and self._history[-1].instruction == text:
                return  # our own publication coming back through the subscription
            self._history.append(HistoryEntry(text, time.time(), source))
            self._stream = {"text": "", "partials": 0, "final": False}
            self._refusal = None
            self._status = {**self._status, "refusal": None}
            self._bump("history", "stream", "status")
        self.on_change("history")

    def on_answer(self, answer: Answer) -> None:
        status = STATUS_NAMES.get(answer.status, f"status {answer.status}")
        with self._lock:
            reasoning_ms = self._status.get("reasoning_ms", 0.0) if answer.tracked else answer.reasoning_ms
            if not answer.tracked and answer.status in REFUSALS:
                self._refusal = {
                    "status": status,
                    "status_text": clip(answer.status_text, MAX_SHORT),
                    "instruction": clip(answer.instruction, MAX_SHORT),
                }
            self._status = {
                "status": status,
                "status_text": clip(answer.status_text, MAX_SHORT),
                "instruction": clip(answer.instruction, MAX_SHORT),
                "tracked": answer.tracked,
                "reasoning_ms": round(float(reasoning_ms), 1),
                "total_ms": round(float(answer.total_ms), 1),
                "tracking_hz": self._tracking_hz,
                "label": clip(answer.label, MAX_SHORT),
                "score": round(float(answer.score), 3),
                "box": list(answer.box) if answer.box else None,
                "refusal": self._refusal,
            }
            self._bump("status")
            if not answer.tracked:  # a reasoned answer (or a rejection) closes the instruction
                self._settle_history(answer, status)
        self.on_change("status")

    def on_rationale_partial(self, text: str) -> None:
        """The rationale decoded so far (each message holds the whole partial text)."""
        with self._lock:
            self._stream = {"text": clip(text, MAX_TEXT), "partials": self._stream["partials"] + 1, "final": False}
            self._bump("stream")
        self.on_change("stream")

    def on_rationale(self, text: str) -> None:
        with self._lock:
            self._rationale = clip(text, MAX_TEXT)
            self._stream = {**self._stream, "text": self._rationale, "final": True}
            self._bump("rationale", "stream")
        self.on_change("rationale")

    def on_pose(self, frame_id: str, position: tuple, orientation_xyzw: tuple) -> None:
        with self._lock:
            self._pose = {
                "frame_id": clip(frame_id, 128),
                "position": [round(float(v), 4) for v in position],
                "orientation_xyzw": [round(float(v), 4) for v in orientation_xyzw],
            }
            self._bump("pose")
        self.on_change("pose")

    def on_diagnostics(self, level: int, message: str, values: dict[str, str]) -> None:
        items = list(values.items())[:MAX_DIAGNOSTIC_VALUES]
        with self._lock:
            self._diagnostics = {
                "level": {0: "ok", 1: "warn", 2: "error", 3: "stale"}.get(int(level), str(level)),
                "message": clip(message, MAX_SHORT),
                "values": {clip(k, 128): clip(v, MAX_SHORT) for k, v in items},
            }
            self._bump("diagnostics")
            hz = _number(values.get("tracked_hz"))
            if hz is not None and hz != self._tracking_hz:
                self._tracking_hz = hz
                self._status = {**self._status, "tracking_hz": hz}
                self._bump("status")
        self.on_change("diagnostics")

    def on_overlay(self, frame: bytes) -> None:
        """The newest overlay JPEG (passed on to the browsers as it is)."""
        with self._lock:
            self._overlay_seq += 1
            self._overlay = (self._overlay_seq, frame)
        self.on_change("overlay")

    # -- outputs (web server) ---------------------------------------------------------
    def versions(self) -> dict[str, int]:
        with self._lock:
            return dict(self._versions)

    def sections(self, since: dict[str, int] | None = None) -> tuple[dict, dict[str, int]]:
        """(sections changed since ``since``, their versions now); all sections when ``since`` is None."""
        with self._lock:
            versions = dict(self._versions)
            changed = {
                name: self._section(name) for name in SECTIONS if since is None or since.get(name, -1) != versions[name]
            }
        return changed, versions

    def latest_overlay(self) -> tuple[int, bytes] | None:
        with self._lock:
            return self._overlay

    # -- internals --------------------------------------------------------------------
    def _section(self, name: str):
        """One section's value (under the lock). The dicts are replaced on change, never
        modified, so they can be serialized after the lock is released; history is copied."""
        if name == "history":
            return [asdict(e) for e in self._history]
        return {
            "status": self._status,
            "stream": self._stream,
            "rationale": self._rationale,
            "pose": self._pose,
            "diagnostics": self._diagnostics,
        }[name]

    def _bump(self, *names: str) -> None:
        for name in names:
            self._versions[name] += 1

    def _settle_history(self, answer: Answer, status: str) -> None:
        # The node reports the cleaned instruction (or the first 200 characters of a rejected one).
        for entry in reversed(self._history):
            if entry.status == "waiting" and (
                entry.instruction == answer.instruction
                or (answer.instruction and entry.instruction.startswith(answer.instruction))
            ):
                entry.status, entry.status_text = status, clip(answer.status_text, MAX_SHORT)
                entry.answer = clip(answer.answer, MAX_TEXT)
                entry.rationale = clip(answer.rationale, MAX_TEXT)
                entry.reasoning_ms = round(float(answer.reasoning_ms), 1)
                self._bump("history")
                return

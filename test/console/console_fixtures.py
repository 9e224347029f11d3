"""The console as a real process (``python -m lens_ros.console.server``) and a small WebSocket client."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

SERVING = re.compile(r"serving http://(\S+?):(\d+)/")


class ConsoleProcess:
    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        argv = [sys.executable, "-m", "lens_ros.console.server", *args]
        self.process = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.port = 0

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> ConsoleProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = SERVING.search(self.output())
            if found:
                self.port = int(found.group(2))
                return self
            if self.process.poll() is not None:
                raise AssertionError(f"lens-console exited ({self.process.returncode}):\n{self.output()}")
            time.sleep(0.1)
        raise AssertionError(f"lens-console did not start within {timeout:.0f} s:\n{self.output()}")

    def wait_exit(self, timeout: float = 60.0) -> int:
        return self.process.wait(timeout=timeout)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def run(coroutine):
    return asyncio.run(coroutine)

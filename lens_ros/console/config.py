"""Every setting of the operator console, in one place (``ConsoleConfig``).

Each field is a ROS parameter of the console node (``--ros-args -p name:=value``, or a
launch file); ``lens-console --host/--port/...`` set the same fields. The access token may
also come from the environment (``LENS_CONSOLE_TOKEN``), which keeps it out of process lists.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field, fields
from typing import Any

from lens_ros.launch_description import LENS_NODE
from lens_ros.model.limits import MAX_INSTRUCTION_CHARS
from lens_ros.node_config import NodeConfig

TOKEN_ENV = "LENS_CONSOLE_TOKEN"
MIN_TOKEN_CHARS = 16


def _setting(default: Any, description: str, low=None, high=None):
    return field(default=default, metadata={"description": description, "low": low, "high": high})


@dataclass
class ConsoleConfig:
    host: str = _setting("127.0.0.1", "Address to listen on; anything but loopback needs a token")
    port: int = _setting(8080, "TCP port (0: any free port, printed at start-up)", 0, 65535)
    token: str = _setting("", f"Access token checked on every request (empty: ${TOKEN_ENV}; required off loopback)")
    lens_node: str = _setting(LENS_NODE, "Name of the lens node whose outputs are shown (its ~/ topics)")
    allowed_origins: str = _setting(
        "", "Comma-separated extra WebSocket origins (scheme://host:port) besides the page's own"
    )
    max_fps: float = _setting(10.0, "Overlay frames sent to each browser per second at most", 0.5, 60.0)
    status_hz: float = _setting(
        5.0, "Tracked frames shown per second, the newest each time (every other answer is shown)", 0.5, 60.0
    )
    max_instruction_length: int = _setting(
        NodeConfig.max_instruction_length,
        "Instructions longer than this are refused (the node's default; the node never takes more)",
        1,
        MAX_INSTRUCTION_CHARS,
    )
    history_size: int = _setting(20, "Recent instructions (with their answers) kept", 1, 1000)
    max_clients: int = _setting(16, "Browser tabs connected at once", 1, 1000)

    def resolved_token(self) -> str:
        return self.token or os.environ.get(TOKEN_ENV, "")

    def extra_origins(self) -> tuple[str, ...]:
        return tuple(o.strip().rstrip("/").lower() for o in self.allowed_origins.split(",") if o.strip())

    def check(self) -> None:
        """Refuse settings that would expose the console: ValueError saying what to do."""
        for f in fields(self):
            low, high = f.metadata["low"], f.metadata["high"]
            value = getattr(self, f.name)
            if low is not None and not low <= value <= high:
                raise ValueError(f"{f.name} must be in [{low}, {high}], got {value}")
        token = self.resolved_token()
        if not is_loopback(self.host) and not token:
            raise ValueError(
                f"host {self.host!r} is reachable from other machines: set a token "
                f"(${TOKEN_ENV} or the token parameter, at least {MIN_TOKEN_CHARS} characters)"
            )
        if token and len(token) < MIN_TOKEN_CHARS:
            raise ValueError(f"the token must have at least {MIN_TOKEN_CHARS} characters")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def declare_parameters(node, defaults: ConsoleConfig | None = None) -> ConsoleConfig:
    """Declare every ConsoleConfig field on ``node`` (read-only) and read them back."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    defaults = defaults or ConsoleConfig()
    for f in fields(ConsoleConfig):
        meta, default = f.metadata, getattr(defaults, f.name)
        descriptor = ParameterDescriptor(name=f.name, description=meta["description"], read_only=True)
        if meta["low"] is not None and isinstance(default, float):
            descriptor.floating_point_range = [FloatingPointRange(from_value=meta["low"], to_value=meta["high"])]
        elif meta["low"] is not None and isinstance(default, int):
            descriptor.integer_range = [IntegerRange(from_value=meta["low"], to_value=meta["high"], step=0)]
        node.declare_parameter(f.name, default, descriptor)
    values = {f.name: node.get_parameter(f.name).value for f in fields(ConsoleConfig)}
    for name in ("max_fps", "status_hz"):
        if isinstance(values[name], int):
            values[name] = float(values[name])
    return ConsoleConfig(**values)

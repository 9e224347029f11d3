"""What every lens_ros node's ``main()`` does around its node: one rule for start and stop.

Create the node (which may take minutes: a model loads), run it, and whatever happens
destroy it and shut rclpy down. Ctrl-C or an external shutdown is a normal end (0). An
expected failure (``errors``: a bad parameter, a missing file) is one fatal log line and
exit status 1, no traceback; after a shutdown has begun it is only the shutdown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

N = TypeVar("N", bound=Node)


def run_node(
    logger: str,
    make: Callable[[], N],
    run: Callable[[N], None],
    errors: tuple[type[Exception], ...],
    failure: str = "cannot start",
) -> int:
    """``run(make())`` in an initialised rclpy; 0, or 1 after logging ``failure: <error>``."""
    node, code = None, 0
    try:
        node = make()
        if rclpy.ok():  # Ctrl-C during start-up shuts the context down: then just exit
            run(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except errors as exc:
        if rclpy.ok():
            rclpy.logging.get_logger(logger).fatal(f"{failure}: {exc}")
            code = 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code

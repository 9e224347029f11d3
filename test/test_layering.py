"""The layers import downwards only (docs/architecture.md): read from the sources, every import.

model and world: no ROS, no training (the model runs in a script, a notebook, training);
training: no ROS (it trains on a machine without ROS); the node and its helpers: no training.
Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROS = (
    "rclpy",
    "std_msgs",
    "sensor_msgs",
    "geometry_msgs",
    "diagnostic_msgs",
    "builtin_interfaces",
    "rcl_interfaces",
    "lifecycle_msgs",
    "visualization_msgs",
    "launch",
    "launch_ros",
    "lens_ros.msg",
    "lens_ros.srv",
    "lens_ros.messages",
    "lens_ros.node",
    "lens_ros.console",
)
TRAINING = ("lens_training", "training")

LAYERS = {
    "lens_ros/model": ROS + TRAINING,
    "lens_ros/world": ROS + TRAINING + ("lens_ros.model",),
    "lens_ros/regions.py": ROS + TRAINING + ("lens_ros.model", "torch"),
    "training": ROS,
    "lens_ros/node.py": TRAINING,
    "lens_ros/node_inputs.py": TRAINING,
    "lens_ros/node_outputs.py": TRAINING,
    "lens_ros/node_config.py": TRAINING,
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def violations(layer: str, forbidden: tuple[str, ...]) -> list[str]:
    target = ROOT / layer
    files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
    assert files, f"{layer}: no Python files (moved? update LAYERS)"
    out = []
    for path in files:
        for line, module in imported_modules(path):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                out.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return out


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_layer_imports_only_what_is_below_it(layer):
    assert violations(layer, LAYERS[layer]) == []


def test_the_check_sees_lazy_imports(tmp_path, monkeypatch):
    """A forbidden import inside a function is found (the check is not vacuous)."""
    (tmp_path / "m.py").write_text("def f():\n    from rclpy.node import Node\n    import lens_training.stage1\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert violations("m.py", ROS + TRAINING) == [
        "m.py:2 imports rclpy.node",
        "m.py:2 imports rclpy.node.Node",
        "m.py:3 imports lens_training.stage1",
    ]

"""perception.launch.py and lens-launch start the same nodes from one description."""

from __future__ import annotations

import ast
import importlib.util
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from lens_ros.launch_cli import command_for
from lens_ros.launch_cli import main as launch_main
from lens_ros.launch_description import ARGUMENT_NAMES, LAUNCH_ARGUMENTS, node_specs, ros_arguments

LAUNCH_FILE = Path(__file__).resolve().parents[2] / "launch" / "perception.launch.py"


def test_launch_file_is_wired_from_the_shared_description():
    tree = ast.parse(LAUNCH_FILE.read_text())
    imported = {
        (node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    assert ("launch_ros.actions", "Node") in imported
    assert ("lens_ros.launch_description", "LAUNCH_ARGUMENTS") in imported
    assert ("lens_ros.launch_description", "node_specs") in imported
    functions = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    literals = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    hard_coded = [s for s in literals if s.startswith("/") or s.endswith(".yaml") or s in ("lens_node", "sim_camera")]
    assert not hard_coded, f"topic names, files and node names belong in launch_description.py: {hard_coded}"


class _Recorder:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _stub_launch_modules(monkeypatch, values):
    class LaunchConfiguration(_Recorder):
        def perform(self, context):
            return context[self.args[0]]

    modules = {
        "launch": types.ModuleType("launch"),
        "launch.actions": types.ModuleType("launch.actions"),
        "launch.substitutions": types.ModuleType("launch.substitutions"),
        "launch_ros": types.ModuleType("launch_ros"),
        "launch_ros.actions": types.ModuleType("launch_ros.actions"),
    }
    modules["launch"].LaunchDescription = type("LaunchDescription", (_Recorder,), {})
    for name in ("DeclareLaunchArgument", "OpaqueFunction", "SetEnvironmentVariable"):
        setattr(modules["launch.actions"], name, type(name, (_Recorder,), {}))
    modules["launch.substitutions"].LaunchConfiguration = LaunchConfiguration
    modules["launch_ros.actions"].Node = type("Node", (_Recorder,), {})
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)


def _run_launch_file(monkeypatch, values: dict[str, str]):
    _stub_launch_modules(monkeypatch, values)
    spec = importlib.util.spec_from_file_location("perception_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    entities = description.args[0]
    declared = {e.args[0]: e.kwargs["default_value"] for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    opaque = next(e for e in entities if type(e).__name__ == "OpaqueFunction")
    context = {name: values.get(name, declared[name]) for name in declared}
    actions = opaque.kwargs["function"](context)
    return declared, [a for a in actions if type(a).__name__ == "Node"]


@pytest.mark.parametrize(
    "values",
    [
        {},
        {
            "use_sim_camera": "true",
            "preset": "lens-3b-sam2-l",
            "model_dir": "/models",
            "image": "/cam/color",
            "depth": "/cam/depth",
            "camera_info": "/cam/info",
            "use_compressed": "true",
            "lifecycle": "true",
        },
    ],
)
def test_launch_file_starts_what_the_description_says(monkeypatch, values):
    declared, nodes = _run_launch_file(monkeypatch, values)
    assert declared == {a.name: a.default for a in LAUNCH_ARGUMENTS}
    specs = node_specs(values)
    assert len(nodes) == len(specs)
    for node, spec in zip(nodes, specs, strict=True):
        kw = node.kwargs
        assert (kw["package"], kw["executable"], kw["name"]) == (spec.package, spec.executable, spec.name)
        assert kw["remappings"] == list(spec.remappings)
        assert kw["arguments"] == list(spec.arguments)
        files = [p for p in kw["parameters"] if isinstance(p, str)]
        overrides = {k: v for p in kw["parameters"] if isinstance(p, dict) for k, v in p.items()}
        assert files == list(spec.parameter_files) and overrides == dict(spec.parameters)


def test_command_line_carries_the_same_parameters_and_remappings():
    specs = node_specs(
        {"preset": "/models/my bundle", "image": "/cam/color", "use_sim_camera": "true", "lifecycle": "true"}
    )
    node, camera = specs
    argv = command_for(node)
    assert argv[:3] == [sys.executable, "-m", "lens_ros.node"] and "--lifecycle" in argv
    ros = ros_arguments(node)
    assert ros[:3] == ["--ros-args", "-r", "__node:=lens_node"]
    assert ["--params-file", node.parameter_files[0]] == ros[3:5]
    assert 'model:="/models/my bundle"' in ros and "image:=/cam/color" in ros
    assert "image/compressed:=/cam/color/compressed" in ros
    assert "camera/image_raw:=/cam/color" in ros_arguments(camera), "the sim camera publishes where the node listens"


def test_unknown_launch_argument_is_refused(capsys):
    assert launch_main(["imgae:=/cam", "--dry-run"]) == 2
    assert "imgae" in capsys.readouterr().err
    assert set(ARGUMENT_NAMES) >= {
        "preset",
        "params_file",
        "image",
        "depth",
        "camera_info",
        "use_sim_camera",
        "use_rviz",
    }


def run_lens_launch(args: list[str], env: dict, log_path: Path, stop_when_logged: str | None, timeout: float = 90.0):
    """Run lens-launch; SIGINT it once ``stop_when_logged`` is in its output (None: wait for it to exit)."""
    with open(log_path, "w") as log:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "lens_ros.launch_cli", *args], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            if stop_when_logged is not None:
                deadline = time.monotonic() + timeout
                while stop_when_logged not in log_path.read_text() and time.monotonic() < deadline:
                    assert launcher.poll() is None, log_path.read_text()
                    time.sleep(0.2)
                time.sleep(1.0)  # a few frames flow
                launcher.send_signal(signal.SIGINT)
            code = launcher.wait(timeout=timeout)
        finally:
            if launcher.poll() is None:
                launcher.kill()
    return code, log_path.read_text()


@pytest.mark.ros
def test_lens_launch_stops_everything_when_the_model_cannot_load(ros_env, tmp_path):
    code, log = run_lens_launch(
        ["use_sim_camera:=true", "preset:=/nonexistent/bundle"], ros_env, tmp_path / "l.log", None
    )
    assert code != 0, log
    assert "/nonexistent/bundle" in log, "the start-up error names the model path"
    assert "stopped" in log and "'sim_camera'" in log, log


@pytest.mark.ros
def test_lens_launch_forwards_sigint_and_every_node_exits(ros_env, tmp_path, tiny_bundle):
    code, log = run_lens_launch(
        ["use_sim_camera:=true", f"preset:={tiny_bundle}", "device:=cpu"], ros_env, tmp_path / "l.log", "model ready"
    )
    assert code == 0, log
    stopped = log[log.index("stopped:") :]
    assert "'lens_node': 0" in stopped and "'sim_camera': 0" in stopped, log


def test_rviz_layout_shows_topics_the_node_publishes():
    import yaml

    from lens_ros.launch_description import LENS_NODE, RVIZ_CONFIG

    layout = yaml.safe_load((LAUNCH_FILE.parents[1] / "config" / RVIZ_CONFIG).read_text())
    displays = {d["Class"].split("/")[-1]: d for d in layout["Visualization Manager"]["Displays"]}
    topics = {d["Topic"]["Value"] for d in layout["Visualization Manager"]["Displays"]}
    published = {f"/{LENS_NODE}/{name}" for name in ("overlay", "mask", "markers", "target_pose", "target_cloud")}
    assert published <= topics, f"missing in {RVIZ_CONFIG}: {published - topics}"
    assert {"Image", "MarkerArray", "Pose", "PointCloud2"} <= set(displays)
    assert layout["Visualization Manager"]["Global Options"]["Fixed Frame"] == "camera_color_optical_frame"

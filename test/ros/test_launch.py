"""perception.launch.py and lens-launch start the same nodes from one description."""

from __future__ import annotations

import ast
import importlib.util
import logging
import os
import re
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from lens_ros.launch_cli import command_for
from lens_ros.launch_cli import main as launch_main
from lens_ros.launch_description import (
    ARGUMENT_NAMES,
    LAUNCH_ARGUMENTS,
    LENS_NODE,
    RVIZ,
    launch_plan,
    node_specs,
    ros_arguments,
)

LAUNCH_FILE = Path(__file__).resolve().parents[2] / "launch" / "perception.launch.py"


def test_launch_file_is_wired_from_the_shared_description():
    tree = ast.parse(LAUNCH_FILE.read_text())
    imported = {
        (node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    assert ("launch_ros.actions", "Node") in imported
    assert ("lens_ros.launch_description", "LAUNCH_ARGUMENTS") in imported
    assert ("lens_ros.launch_description", "launch_plan") in imported
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
        "launch.logging": types.ModuleType("launch.logging"),
        "launch.actions": types.ModuleType("launch.actions"),
        "launch.substitutions": types.ModuleType("launch.substitutions"),
        "launch_ros": types.ModuleType("launch_ros"),
        "launch_ros.actions": types.ModuleType("launch_ros.actions"),
    }
    modules["launch"].LaunchDescription = type("LaunchDescription", (_Recorder,), {})
    modules["launch"].logging = modules["launch.logging"]
    modules["launch.logging"].get_logger = logging.getLogger  # launch's loggers are standard ones
    for name in ("DeclareLaunchArgument", "OpaqueFunction", "SetEnvironmentVariable", "Shutdown"):
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
        assert (kw["package"], kw["executable"], kw["name"]) == (spec.package or None, spec.executable, spec.name)
        shuts_down = [type(a).__name__ for a in kw["on_exit"] or ()] == ["Shutdown"]
        assert shuts_down == (spec.name == LENS_NODE), "the launch ends when lens_node exits, as lens-launch does"
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


# -- what a ROS user meets: exit status, a missing rviz2, installed executables -------------

INSTALLED_LIB = Path(sys.prefix) / "lib" / "lens_ros"  # lib/<package>/, where launch_ros finds executables
SOURCE_SCRIPTS = LAUNCH_FILE.parents[1] / "scripts"


def _environment_without_rviz(monkeypatch, tmp_path) -> None:
    empty = tmp_path / "empty_prefix"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(empty))


def _executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_use_rviz_without_rviz2_leaves_rviz_out_with_a_warning(monkeypatch, tmp_path, capsys):
    _environment_without_rviz(monkeypatch, tmp_path)
    plan = launch_plan({"use_rviz": "true", "use_sim_camera": "true"})
    assert [s.name for s in plan.specs] == [LENS_NODE, "sim_camera"], "nothing is started that cannot run"
    assert len(plan.warnings) == 1 and "use_rviz" in plan.warnings[0] and RVIZ in plan.warnings[0], plan.warnings
    assert launch_plan({}).warnings == [], "no warning when RViz was not asked for"
    assert launch_main(["use_rviz:=true", "--dry-run"]) == 0
    assert "WARNING" in capsys.readouterr().err


def test_rviz_comes_from_the_ament_index_like_launch_ros_finds_it(monkeypatch, tmp_path):
    _environment_without_rviz(monkeypatch, tmp_path)
    prefix = tmp_path / "ros"
    _executable(prefix / "share" / "ament_index" / "resource_index" / "packages" / RVIZ, "")
    binary = _executable(prefix / "lib" / RVIZ / RVIZ, "#!/bin/sh\n")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    plan = launch_plan({"use_rviz": "true"})
    rviz = plan.specs[-1]
    assert (rviz.package, rviz.executable, plan.warnings) == (RVIZ, RVIZ, [])
    assert command_for(rviz)[0] == str(binary), "lens-launch runs the binary launch_ros would run"
    assert command_for(rviz)[1:3] == ["-d", rviz.arguments[1]] and rviz.arguments[1].endswith("lens.rviz")


def test_rviz_found_only_on_path_is_named_by_its_path(monkeypatch, tmp_path):
    _environment_without_rviz(monkeypatch, tmp_path)
    binary = _executable(tmp_path / "bin" / RVIZ, "#!/bin/sh\n")
    monkeypatch.setenv("PATH", str(binary.parent))
    rviz = launch_plan({"use_rviz": "true"}).specs[-1]
    assert (rviz.package, rviz.executable) == ("", str(binary)), "launch_ros runs it as Node(executable=<path>)"


def test_launch_file_warns_and_starts_no_rviz_without_rviz2(monkeypatch, tmp_path, caplog):
    _environment_without_rviz(monkeypatch, tmp_path)
    with caplog.at_level(logging.WARNING):
        _, nodes = _run_launch_file(monkeypatch, {"use_rviz": "true"})
    assert [n.kwargs["name"] for n in nodes] == [LENS_NODE]
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and RVIZ in r.getMessage()]
    assert warned, "the launch log says why RViz did not start"


def _started_pids(log: str) -> dict[str, int]:
    return {name: int(pid) for name, pid in re.findall(r"started (\S+) \(pid (\d+)\)", log)}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its parent's reaping is left


def _left_behind(pids, timeout: float = 3.0) -> list[int]:
    """The pids still running once lens-launch has exited (killed here, so a failing test leaves none)."""
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [p for p in pids if _alive(p)]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    return alive


def _env_without_rviz(ros_env: dict, tmp_path: Path, extra_path: Path | None = None) -> dict:
    env = dict(ros_env)
    env["PATH"] = os.pathsep.join([*([str(extra_path)] if extra_path else []), "/usr/bin", "/bin"])
    env["AMENT_PREFIX_PATH"] = str(tmp_path)
    return env


@pytest.mark.ros
@pytest.mark.parametrize(
    "executable, args, says",
    [
        ("lens_node", ["--ros-args", "-p", "model:=no-such-model"], "unknown model preset 'no-such-model'"),
        ("sim_camera", ["--ros-args", "-p", "rate_hz:=0.0"], "rate_hz"),
        ("bag_player", ["/nonexistent/run.mcap"], "bag not found"),
    ],
)
def test_installed_executable_runs_with_a_minimal_path_and_fails_with_a_status(
    ros_env, tmp_path, executable, args, says
):
    installed = INSTALLED_LIB / executable
    if not installed.exists():
        pytest.skip(f"{installed} is installed by `make setup` (tools/build_interfaces.sh)")
    source = (SOURCE_SCRIPTS / executable).read_text()
    assert installed.read_text().split("\n", 1)[1] == source.split("\n", 1)[1], "stale install: run `make setup`"
    # What a supervisor or launch gives it: no venv on PATH, no PYTHONPATH.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    env.update({k: v for k, v in ros_env.items() if k.startswith(("ROS_", "FASTDDS_", "RMW_"))})
    done = subprocess.run([str(installed), *args], env=env, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert "No module named" not in output, f"the installed script does not run its own interpreter:\n{output}"
    assert done.returncode == 1, f"a node that cannot start exits 1, got {done.returncode}:\n{output}"
    assert says in output, output


@pytest.mark.ros
def test_lens_launch_without_rviz2_warns_and_leaves_no_process(ros_env, tmp_path):
    code, log = run_lens_launch(
        ["use_rviz:=true", "use_sim_camera:=true", "preset:=no-such-model"],
        _env_without_rviz(ros_env, tmp_path),
        tmp_path / "l.log",
        None,
    )
    assert "WARNING" in log and "use_rviz" in log, log
    pids = _started_pids(log)
    assert _left_behind(pids.values()) == [], log
    assert set(pids) == {LENS_NODE, "sim_camera"}, log
    assert code == 1, f"lens-launch exits with lens_node's status:\n{log}"


@pytest.mark.ros
def test_lens_launch_stops_what_it_started_when_a_node_cannot_be_started(ros_env, tmp_path):
    broken = _executable(tmp_path / "bin" / RVIZ, "#!/nonexistent/interpreter\n")  # on PATH, cannot exec
    code, log = run_lens_launch(
        ["use_rviz:=true", "use_sim_camera:=true", "device:=cpu"],
        _env_without_rviz(ros_env, tmp_path, broken.parent),
        tmp_path / "l.log",
        None,
    )
    pids = _started_pids(log)
    assert _left_behind(pids.values()) == [], log
    assert set(pids) == {LENS_NODE, "sim_camera"}, log
    assert code == 1 and f"cannot start rviz ({broken})" in log, log


@pytest.mark.ros
def test_lens_launch_stops_processes_a_node_left_in_its_group(ros_env, tmp_path):
    # An rviz2 that starts a helper which ignores SIGINT (as background jobs of sh do).
    child_pid = tmp_path / "child.pid"
    fake = _executable(tmp_path / "bin" / RVIZ, f"#!/bin/sh\nsleep 300 &\necho $! > {child_pid}\nwait\n")
    code, log = run_lens_launch(
        ["use_rviz:=true", "preset:=no-such-model"],
        _env_without_rviz(ros_env, tmp_path, fake.parent),
        tmp_path / "l.log",
        None,
    )
    pids = _started_pids(log)
    assert child_pid.exists(), log
    assert _left_behind([*pids.values(), int(child_pid.read_text())]) == [], f"orphans left behind:\n{log}"
    assert set(pids) == {LENS_NODE, "rviz"}, log
    assert code == 1, log

"""ros2 launch lens_ros perception.launch.py [preset:=...] [image:=...] [use_sim_camera:=true] ...

The nodes, parameter files, remappings and launch arguments come from
lens_ros.launch_description, which `lens-launch` (the venv equivalent) reads too.
Outputs are published in the camera's frame (no tf2 lookups).
"""

import os

from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from lens_ros.launch_description import LAUNCH_ARGUMENTS, node_specs
from lens_ros.ros_env import PROFILE_ENV, configure_dds


def _start_nodes(context, *args, **kwargs):
    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in LAUNCH_ARGUMENTS}
    # Camera frames need the shipped Fast DDS profile in every process, RViz included.
    actions = []
    if not os.environ.get(PROFILE_ENV):
        actions.append(SetEnvironmentVariable(PROFILE_ENV, configure_dds({})))
    for spec in node_specs(values):
        actions.append(
            Node(
                package=spec.package,
                executable=spec.executable,
                name=spec.name,
                output="screen",
                parameters=[*spec.parameter_files, dict(spec.parameters)]
                if spec.parameters
                else list(spec.parameter_files),
                remappings=list(spec.remappings),
                arguments=list(spec.arguments),
                ros_arguments=["--log-level", spec.log_level],
            )
        )
    return actions


def generate_launch_description():
    declared = [
        DeclareLaunchArgument(a.name, default_value=a.default, description=a.description) for a in LAUNCH_ARGUMENTS
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=_start_nodes)])

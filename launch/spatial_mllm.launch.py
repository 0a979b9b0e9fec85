"""Start spatial_mllm_node with a parameter file (desktop GPU by default).

    ros2 launch ros2_spatial_mllm spatial_mllm.launch.py \
        config:=$(ros2 pkg prefix ros2_spatial_mllm)/share/ros2_spatial_mllm/config/cpu.yaml \
        camera_topic:=/camera/color/image_raw namespace:=robot1 model_path:=/models/spatial-mllm

Arguments: config (parameter YAML), camera_topic (remaps the node's relative `image` and
`image/compressed` inputs), namespace, model_path (empty = the config's value), autostart.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node

PACKAGE = "ros2_spatial_mllm"
EXECUTABLE = "spatial_mllm_node"


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    config = LaunchConfiguration("config")
    camera_topic = LaunchConfiguration("camera_topic")
    model_path = LaunchConfiguration("model_path")
    remappings = [
        ("image", camera_topic),
        ("image/compressed", [camera_topic, "/compressed"]),
    ]
    has_model_path = PythonExpression(["'", model_path, "' != ''"])
    common = dict(package=PACKAGE, executable=EXECUTABLE, name=EXECUTABLE,
                  namespace=LaunchConfiguration("namespace"), output="screen",
                  remappings=remappings)
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=os.path.join(share, "config", "desktop_gpu.yaml"),
                              description="parameter YAML (config/desktop_gpu.yaml, jetson_orin.yaml, cpu.yaml)"),
        DeclareLaunchArgument("camera_topic", default_value="/camera/color/image_raw",
                              description="colour image topic (raw; <topic>/compressed when compressed)"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("model_path", default_value="",
                              description="local checkpoint directory; empty keeps the config's value"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="configure + activate at start-up"),
        Node(condition=IfCondition(has_model_path),
             parameters=[config, {"autostart": LaunchConfiguration("autostart"), "model_path": model_path}],
             **common),
        Node(condition=UnlessCondition(has_model_path),
             parameters=[config, {"autostart": LaunchConfiguration("autostart")}],
             **common),
    ])

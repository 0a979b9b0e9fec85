"""Start spatial_mllm_node on a Jetson Orin: config/jetson_orin.yaml, compressed camera input.

    ros2 launch ros2_spatial_mllm spatial_mllm_jetson.launch.py \
        camera_topic:=/camera/color/image_raw model_path:=/models/spatial-mllm

The node subscribes to <camera_topic>/compressed (image_transport=compressed in the config).
Arguments: camera_topic, namespace, model_path (empty = embedded tiny model), device
(cuda; the TensorRT engines of the engines package are built offline, never here).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "ros2_spatial_mllm"
EXECUTABLE = "spatial_mllm_node"


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    camera_topic = LaunchConfiguration("camera_topic")
    return LaunchDescription([
        DeclareLaunchArgument("camera_topic", default_value="/camera/color/image_raw",
                              description="colour image base topic (the node reads <topic>/compressed)"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("model_path", default_value="",
                              description="local checkpoint directory; empty = embedded tiny model"),
        DeclareLaunchArgument("device", default_value="cuda", description="torch device"),
        Node(
            package=PACKAGE, executable=EXECUTABLE, name=EXECUTABLE,
            namespace=LaunchConfiguration("namespace"), output="screen",
            parameters=[
                os.path.join(share, "config", "jetson_orin.yaml"),
                {"model_path": LaunchConfiguration("model_path"),
                 "device": LaunchConfiguration("device"),
                 "autostart": True},
            ],
            remappings=[("image", camera_topic), ("image/compressed", [camera_topic, "/compressed"])],
        ),
    ])

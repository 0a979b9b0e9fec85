"""Python packaging for ros2_spatial_mllm.

Two ways in:
  * dev machines without ROS: `scripts/setup.sh` installs this package editable into `.venv`;
  * robots: `colcon build` uses CMakeLists.txt (ament_cmake + rosidl) which installs the same
    Python package with ament_cmake_python; this file is not used there.
"""
from setuptools import find_packages, setup

setup(
    name="ros2_spatial_mllm",
    version="0.1.0",
    description="ROS 2 node and core library answering spatial questions with a Spatial-MLLM",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["ros2_spatial_mllm*", "training*", "engines*"]),
    include_package_data=True,
    package_data={"ros2_spatial_mllm": ["assets/**/*"]},
    entry_points={
        "console_scripts": [
            "spatial-mllm = ros2_spatial_mllm.cli:main",
            "spatial_mllm_node = ros2_spatial_mllm.node:main",
            "spatial-mllm-bag = ros2_spatial_mllm.bag.cli:main",
            "spatial-mllm-data = training.data.cli:main",
            "spatial-mllm-eval = training.evaluate:main",
            "spatial-mllm-train = training.cli:main",
            "spatial-mllm-engines = engines.cli:main",
        ]
    },
)

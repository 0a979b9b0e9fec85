"""Static checks of the ROS package files against the node (no node process needed).

launch/launch_ros are not installable from PyPI, so the launch files are checked by parsing them:
every parameter name they set must be a declared node parameter, the executable must be the one
CMakeLists installs and setup.py declares, and the config files they name must exist.
"""
from __future__ import annotations

import ast
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from ros2_spatial_mllm.ros.params import NodeConfig

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "config").glob("*.yaml"))
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))


def _yaml_params(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    assert list(data) == ["/**"], f"{path.name}: expected a single '/**' section"
    return data["/**"]["ros__parameters"]


def test_expected_files_exist():
    assert {p.name for p in CONFIGS} >= {"desktop_gpu.yaml", "jetson_orin.yaml", "cpu.yaml"}
    assert {p.name for p in LAUNCH_FILES} >= {"spatial_mllm.launch.py", "spatial_mllm_jetson.launch.py"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_mirrors_node_config(path):
    params = _yaml_params(path)
    assert sorted(params) == sorted(NodeConfig.parameter_names()), \
        f"{path.name} must list every node parameter exactly once"
    config = NodeConfig.from_dict(params)  # types and ranges valid
    assert config.validate() is config


def test_config_rejects_unknown_and_out_of_range():
    with pytest.raises(ValueError, match="unknown parameter"):
        NodeConfig.from_dict({"no_such_param": 1})
    with pytest.raises(ValueError, match="sampling"):
        NodeConfig.from_dict({"sampling": "random"})
    with pytest.raises(ValueError, match="qos_depth"):
        NodeConfig.from_dict({"qos_depth": 0})
    with pytest.raises(ValueError, match="must be int"):
        NodeConfig.from_dict({"num_frames": 2.5})


def _launch_facts(path: Path) -> tuple[set[str], set[str], set[str], set[str]]:
    """(parameter names set in dict literals, executables, packages, config file names)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    constants = {}
    for node in ast.walk(tree):  # module-level NAME = "literal"
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    constants[target.id] = node.value.value

    def value_of(expr):
        if isinstance(expr, ast.Constant):
            return expr.value
        if isinstance(expr, ast.Name):
            return constants.get(expr.id)
        return None

    params, executables, packages, configs = set(), set(), set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "parameters":
            assert isinstance(node.value, ast.List), f"{path.name}: parameters must be a list literal"
            for item in node.value.elts:
                if isinstance(item, ast.Dict):
                    for key in item.keys:
                        params.add(value_of(key))
        if isinstance(node, ast.keyword) and node.arg == "executable":
            executables.add(value_of(node.value))
        if isinstance(node, ast.keyword) and node.arg == "package":
            packages.add(value_of(node.value))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.endswith(".yaml"):
            configs.add(node.value)
    return params, executables, packages, configs


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_matches_node(path):
    params, executables, packages, configs = _launch_facts(path)
    declared = set(NodeConfig.parameter_names())
    assert params, f"{path.name} sets no parameters"
    assert params <= declared, f"{path.name} sets undeclared parameters {sorted(params - declared)}"
    assert executables == {"spatial_mllm_node"}
    assert packages == {"ros2_spatial_mllm"}
    for name in configs:
        assert (ROOT / "config" / name).is_file(), f"{path.name} names missing config/{name}"
    # the executable exists in both install paths: CMake (ros2 run) and setup.py (pip)
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r"install\(PROGRAMS resource/spatial_mllm_node DESTINATION lib/\$\{PROJECT_NAME\}\)", cmake)
    assert "spatial_mllm_node = ros2_spatial_mllm.node:main" in (ROOT / "setup.py").read_text()
    assert (ROOT / "resource" / "spatial_mllm_node").stat().st_mode & 0o111, "node script not executable"


def test_package_xml_declares_dependencies():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "ros2_spatial_mllm"
    deps = {el.text for el in root if el.tag.endswith("depend")}
    for key in ("ament_cmake", "ament_cmake_python", "rosidl_default_generators", "rosidl_default_runtime",
                "rclpy", "lifecycle_msgs", "action_msgs", "sensor_msgs", "std_msgs", "geometry_msgs",
                "nav_msgs", "diagnostic_msgs", "builtin_interfaces", "python3-numpy", "python3-opencv",
                "tf2_msgs"):
        assert key in deps, f"package.xml misses {key}"
    assert root.findtext("member_of_group") == "rosidl_interface_packages"
    assert root.find("export/build_type").text == "ament_cmake"
    cmake = (ROOT / "CMakeLists.txt").read_text()
    for interface in ("msg/Latency.msg", "msg/SpatialAnswer.msg", "srv/AskSpatial.srv", "action/AskSpatial.action"):
        assert f'"{interface}"' in cmake and (ROOT / interface).is_file()
    assert 'DESTINATION "${PYTHON_INSTALL_DIR}/${PROJECT_NAME}"' in cmake


def test_error_codes_single_definition_matches_engine():
    from ros2_spatial_mllm.action import AskSpatial as AskSpatialAction
    from ros2_spatial_mllm.query_engine import ErrorCode
    from ros2_spatial_mllm.srv import AskSpatial
    srv_codes = {name: getattr(AskSpatial.Response, name) for name in dir(AskSpatial.Response)
                 if name.isupper() and isinstance(getattr(AskSpatial.Response, name), int)}
    assert srv_codes == {code.name: int(code) for code in ErrorCode}
    # result and answer message carry the same outcome fields as the service response
    from ros2_spatial_mllm.msg import SpatialAnswer
    response_fields = AskSpatial.Response.get_fields_and_field_types()
    assert AskSpatialAction.Result.get_fields_and_field_types() == response_fields
    answer_fields = SpatialAnswer.get_fields_and_field_types()
    assert set(response_fields.items()) <= set(answer_fields.items())
    goal_fields = AskSpatialAction.Goal.get_fields_and_field_types()
    assert goal_fields == AskSpatial.Request.get_fields_and_field_types()
    assert math.isnan(float("nan"))  # value uses NaN for "no number" (documented in the .srv)
    assert "NaN if" in (ROOT / "srv" / "AskSpatial.srv").read_text()


def test_tf2_msgs_stand_in_is_dev_only_and_matches_the_real_definition():
    """third_party/tf2_msgs is never built by colcon on a robot, and its only message has the
    real tf2_msgs/msg/TFMessage definition (so the same RIHS01 type hash on the wire)."""
    src = ROOT / "third_party" / "tf2_msgs"
    assert (src / "COLCON_IGNORE").is_file() and (src / "AMENT_IGNORE").is_file()
    lines = [ln.split("#")[0].strip() for ln in (src / "msg" / "TFMessage.msg").read_text().splitlines()]
    assert [ln for ln in lines if ln] == ["geometry_msgs/TransformStamped[] transforms"]
    from tf2_msgs.msg import TFMessage  # built by scripts/build_interfaces.sh when missing
    assert TFMessage.get_fields_and_field_types() == {"transforms": "sequence<geometry_msgs/TransformStamped>"}

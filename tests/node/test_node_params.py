"""The node reads each config/*.yaml for real (`--params-file`) and reports the values back."""
from __future__ import annotations

from pathlib import Path

import yaml

from ros2_spatial_mllm.ros.params import NodeConfig
from ros_util import change_state, get_parameters, lifecycle_state

ROOT = Path(__file__).resolve().parents[2]


def test_params_files_read_back(client_node, node_factory):
    """All three configs in parallel (three node processes), autostart forced off."""
    names = NodeConfig.parameter_names()
    nodes = {}
    for path in sorted((ROOT / "config").glob("*.yaml")):
        node_name = f"params_{path.stem}"
        nodes[path] = node_factory(node_name, params={"autostart": False}, params_file=str(path))
    for path, proc in nodes.items():
        expected = yaml.safe_load(path.read_text())["/**"]["ros__parameters"]
        expected["autostart"] = False  # the command line overrides the file
        try:
            got = get_parameters(client_node, proc.fqn, names)
        except AssertionError as exc:
            raise AssertionError(f"{path.name}: {exc}; node alive={proc.alive()}\n{proc.log()}") from exc
        assert got == expected, f"{path.name}: {set(got.items()) ^ set(expected.items())}"
        assert lifecycle_state(client_node, proc.fqn) == "unconfigured"
    # one of them configures for real from its file (no model load: activate not requested)
    path, proc = next(iter(nodes.items()))
    assert change_state(client_node, proc.fqn, "configure")
    assert lifecycle_state(client_node, proc.fqn) == "inactive"
    assert "configured: input" in proc.log()


def test_invalid_parameter_fails_configure_but_node_lives(client_node, node_factory):
    proc = node_factory("params_invalid", params={"sampling": "random_walk", "autostart": True})
    assert lifecycle_state(client_node, proc.fqn) == "unconfigured"
    assert not change_state(client_node, proc.fqn, "configure")
    assert proc.alive()
    assert "sampling='random_walk'" in proc.log()
    assert lifecycle_state(client_node, proc.fqn) == "unconfigured"


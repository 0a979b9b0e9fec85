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



def test_config_builds_the_buffer_and_topic_it_describes():
    config = NodeConfig.from_dict({**NodeConfig.defaults(), "image_topic": "cam/", "image_transport": "compressed",
                                   "buffer_max_frames": 7, "buffer_max_mb": 2.0, "keyframe_min_interval_s": 0.5})
    assert config.subscribed_image_topic() == "cam/compressed"
    buffer = config.frame_buffer()
    stats = buffer.stats()
    assert stats["max_frames"] == 7 and stats["max_bytes"] == 2 << 20 and stats["frames"] == 0
    assert buffer.min_interval_ns == 500_000_000
    raw = NodeConfig.from_dict({**NodeConfig.defaults(), "image_topic": "cam/", "image_transport": "raw"})
    assert raw.subscribed_image_topic() == "cam"


def test_one_log_line_per_query_names_the_outcome():
    from ros2_spatial_mllm.query_engine import ErrorCode, QueryResponse
    from ros2_spatial_mllm.ros.convert import outcome_log_line

    ok = QueryResponse(ErrorCode.OK, answer="x" * 80, frame_stamps_ns=[1, 2, 3], num_tokens=5, request_id=4,
                       latency_ms={"total_ms": 12.4})
    line = outcome_log_line(ok, "action")
    assert line.startswith("ask[action] #4 OK: frames=3 tokens=5 total=12ms answer='")
    assert line.endswith("x" * 57 + "...'")
    busy = outcome_log_line(QueryResponse(ErrorCode.BUSY, message="queue full"), "service")
    assert busy == "ask[service] #0 BUSY: frames=0 tokens=0 total=0ms reason='queue full'"

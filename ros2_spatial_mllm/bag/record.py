"""Record the node's answer messages (``ros2_spatial_mllm/msg/SpatialAnswer``) into a rosbag2.

The subscription is raw (serialised CDR bytes), written to the bag unchanged with the receive
time as bag timestamp; the message definition stored in the bag comes from the package's
msg/*.msg files registered in rosbags' typestore, so any rosbag2 reader (``ros2 bag info``,
rosbags, MCAP tools) can decode the answers without this package. Subscribing still needs the
generated rclpy type (``scripts/build_interfaces.sh`` on dev machines, colcon on robots).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from rosbags.rosbag2 import StoragePlugin, Writer

from ros2_spatial_mllm.bag.io import typestore
from ros2_spatial_mllm.bag.replay import message_class

__all__ = ["ANSWER_TYPE", "record_topic"]

ANSWER_TYPE = "ros2_spatial_mllm/msg/SpatialAnswer"


def record_topic(out_bag: str | Path, topic: str = "/spatial_mllm/answers", msgtype: str = ANSWER_TYPE,
                 storage: str = "sqlite3", duration_s: float | None = None, max_messages: int | None = None,
                 should_stop: Callable[[], bool] | None = None, log: Callable[[str], None] = print) -> int:
    """Subscribe to ``topic`` and write every message to ``out_bag`` until ``duration_s`` passed,
    ``max_messages`` were written, ``should_stop()`` is true or Ctrl-C. Returns the count."""
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.qos import QoSProfile, ReliabilityPolicy, DurabilityPolicy

    store = typestore()
    if msgtype not in store.types:
        raise ValueError(f"message type {msgtype} is not in the typestore (msg/ files missing?)")
    cls = message_class(msgtype)   # fails early, with a clear message, if interfaces are not built
    owns_context = not rclpy.ok()
    if owns_context:
        rclpy.init()
    node = rclpy.create_node("spatial_mllm_bag_recorder")
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    writer = Writer(Path(out_bag), version=9, storage_plugin=plugin)
    received: list[tuple[int, bytes]] = []
    count, conn = 0, None
    try:
        writer.open()
        conn = writer.add_connection(topic, msgtype, typestore=store)
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
        node.create_subscription(cls, topic, lambda raw: received.append((time.time_ns(), raw)), qos, raw=True)
        log(f"recording {topic} ({msgtype}) into {out_bag}")
        end = None if duration_s is None else time.monotonic() + duration_s
        while rclpy.ok():
            rclpy.spin_once(node, timeout_sec=0.1)
            while received:
                stamp, raw = received.pop(0)
                writer.write(conn, stamp, raw)
                count += 1
            if (max_messages is not None and count >= max_messages) or (end is not None and time.monotonic() >= end) \
                    or (should_stop is not None and should_stop()):
                break
    except (KeyboardInterrupt, ExternalShutdownException):   # Ctrl-C: keep what was recorded
        pass
    finally:
        if conn is not None:
            while received:
                stamp, raw = received.pop(0)
                writer.write(conn, stamp, raw)
                count += 1
            writer.close()
        if rclpy.ok():
            node.destroy_node()
        if owns_context:
            rclpy.try_shutdown()
    return count

"""Publish a rosbag2's topics into a running ROS 2 graph (rclpy), keeping the bag's header stamps.

Messages are published as the bag's serialised CDR bytes (rclpy publishes ``bytes`` as a
serialised message), so header stamps, encodings and payloads reach subscribers exactly as they
were recorded and nothing is re-encoded. Pacing follows the bag's receive timestamps divided by
``rate`` (``rate=None``: as fast as possible). With ``loop`` the bag restarts; its stamps then go
back in time, which the node's FrameBuffer detects as a time jump (see buffer.py).
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from rosbags.rosbag2 import Reader

__all__ = ["ReplayStats", "DEFAULT_TYPES", "replay_bag", "message_class"]

# Types replayed by default (images, depth, camera info, odometry, TF); others need --topics.
DEFAULT_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/CameraInfo",
                 "nav_msgs/msg/Odometry", "tf2_msgs/msg/TFMessage")


@dataclass
class ReplayStats:
    published: int = 0
    loops: int = 0
    interrupted: bool = False       # Ctrl-C / context shut down before the end
    per_topic: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    unacked_topics: list[str] = field(default_factory=list)  # reliable topics not acknowledged in time


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy message class (import of the generated package)."""
    package, kind, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ImportError, AttributeError) as exc:
        raise RuntimeError(f"message type {msgtype} is not importable in this Python ({exc})") from exc


def replay_bag(bag: str | Path, rate: float | None = 1.0, topics: Sequence[str] | None = None,
               loop: bool = False, wait_for_subscribers_s: float = 0.0, qos_depth: int = 100,
               best_effort: bool = False, node_name: str = "spatial_mllm_bag_replay",
               should_stop: Callable[[], bool] | None = None, log: Callable[[str], None] = print,
               drain_timeout_s: float = 5.0) -> ReplayStats:
    """Replay ``bag``; returns counts. Initialises/shuts down rclpy itself when not yet running.

    topics: topic names to publish (default: every topic whose type is in DEFAULT_TYPES);
    wait_for_subscribers_s: wait up to this long until some image topic has a subscriber
    (then 0.5 s more so the subscriber's depth/info/odom subscriptions match too);
    drain_timeout_s: with reliable QoS, wait up to this long at the end until subscribers have
    acknowledged everything (topics still unacknowledged are listed in the stats).
    """
    import rclpy
    from rclpy.duration import Duration
    from rclpy.qos import QoSProfile, ReliabilityPolicy, HistoryPolicy

    if rate is not None and rate <= 0:
        raise ValueError(f"rate must be > 0 (or None for as fast as possible), got {rate}")
    owns_context = not rclpy.ok()
    if owns_context:
        rclpy.init()
    stats = ReplayStats()
    node = rclpy.create_node(node_name)
    started = time.monotonic()
    try:
        with Reader(bag) as reader:
            conns = [c for c in reader.connections
                     if (c.topic in topics if topics else c.msgtype in DEFAULT_TYPES)]
            if topics:
                missing = sorted(set(topics) - {c.topic for c in conns})
                if missing:
                    raise ValueError(f"topics not in the bag: {', '.join(missing)}")
            if not conns:
                raise ValueError(f"no replayable topics in {bag} (types {', '.join(DEFAULT_TYPES)})")
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=qos_depth,
                             reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE)
            publishers = {}
            for conn in conns:
                if conn.topic not in publishers:
                    publishers[conn.topic] = node.create_publisher(message_class(conn.msgtype), conn.topic, qos)
                    stats.per_topic[conn.topic] = 0
            image_pubs = [p for c in conns if c.msgtype.startswith("sensor_msgs/msg/") and "Image" in c.msgtype
                          for p in [publishers[c.topic]]]
            deadline = time.monotonic() + wait_for_subscribers_s
            while image_pubs and all(p.get_subscription_count() == 0 for p in image_pubs) \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
            if wait_for_subscribers_s > 0:
                time.sleep(min(0.5, wait_for_subscribers_s))  # let the node's other subscriptions match
            started = time.monotonic()
            while True:
                t0_bag, t0_wall = None, time.monotonic()
                for conn, timestamp, raw in reader.messages(connections=conns):
                    if (should_stop is not None and should_stop()) or not rclpy.ok():
                        stats.interrupted = True
                        break
                    if t0_bag is None:
                        t0_bag = timestamp
                    if rate is not None:
                        delay = (timestamp - t0_bag) * 1e-9 / rate - (time.monotonic() - t0_wall)
                        if delay > 0:
                            time.sleep(delay)
                    try:
                        publishers[conn.topic].publish(bytes(raw))
                    except Exception:
                        if rclpy.ok():
                            raise
                        stats.interrupted = True   # SIGINT: rclpy shut the context down
                        break
                    stats.published += 1
                    stats.per_topic[conn.topic] += 1
                if stats.interrupted:
                    break
                stats.loops += 1
                if not loop:
                    break
            if not best_effort and not stats.interrupted:
                # Reliable delivery only holds while the writer lives: wait until every matched
                # subscriber acknowledged, or the last messages die with this process.
                drain = Duration(seconds=drain_timeout_s)
                stats.unacked_topics = [t for t, p in publishers.items() if not p.wait_for_all_acked(drain)]
            stats.wall_s = time.monotonic() - started
            return stats
    except KeyboardInterrupt:
        stats.interrupted = True
        stats.wall_s = time.monotonic() - started
        return stats
    finally:
        if rclpy.ok():
            node.destroy_node()
        if owns_context:
            rclpy.try_shutdown()

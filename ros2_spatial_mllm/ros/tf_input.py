"""TF input for the node: the tf2_msgs message type (imported lazily) and the QoS tf2 uses.

tf2_ros is not on PyPI; the node only needs the message: `tf2_msgs/msg/TFMessage`
(`geometry_msgs/TransformStamped[] transforms`). On a robot it comes from ros-<distro>-tf2-msgs;
on a dev machine with the Kilted wheels scripts/build_interfaces.sh generates a minimal tf2_msgs
(third_party/tf2_msgs, same definition, so the same type hash) when none is importable.
QoS as tf2_ros listeners use it: /tf reliable, volatile, depth 100; /tf_static reliable,
transient local (every static broadcaster's latched message reaches late joiners), depth 1.
"""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

TF_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.VOLATILE)
TF_STATIC_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)


def import_tf_message():
    """tf2_msgs.msg.TFMessage, or None when tf2_msgs is not importable."""
    try:
        from tf2_msgs.msg import TFMessage
    except ImportError:
        return None
    return TFMessage

"""Small ROS 2 adapters used by the node (parameters, message conversion, diagnostics).

These modules import rclpy / ROS message packages; the core (buffer, codec, query engine,
model) never does.
"""

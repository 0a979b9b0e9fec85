"""A live synthetic camera: publish rgb8 sensor_msgs/Image at a fixed rate, stamps strictly increasing.

    python tests/reliability/stream_publisher.py --topic /cam/image --duration 10 --rate 30 --size 1920x1080
    python tests/reliability/stream_publisher.py --topic /cam/image --duration 2 --rate 5 --size 64x48   # tiny

Frames: D2's synthetic room (ros2_spatial_mllm/bag/synthetic.py) rendered at low resolution along
an orbit and upscaled to --size (rendering 1080p per frame would dominate the CPU); --distinct
frames are prepared once and cycled, each publication gets the next stamp t0 + i / rate.
Reliable QoS, depth 5, waits up to --wait s for a subscriber. Prints one JSON line at the end:
published, duration_s, achieved_hz, late (publications > 1 period behind schedule), first/last stamp.
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def _frames(n: int, width: int, height: int):
    import cv2
    import numpy as np

    from ros2_spatial_mllm.bag import synthetic
    scene, poses = synthetic.default_scene(), synthetic.orbit_poses(n)
    small = (max(8, width // 8), max(8, height // 8))
    K = synthetic.intrinsics_for(*small)
    out = []
    for pose in poses:
        rgb, _ = synthetic.render(scene, pose, K, (small[1], small[0]))
        out.append(np.ascontiguousarray(cv2.resize(rgb, (width, height), interpolation=cv2.INTER_NEAREST)))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topic", required=True, help="image topic to publish")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to publish")
    parser.add_argument("--rate", type=float, default=30.0, help="frames per second")
    parser.add_argument("--size", default="1920x1080", help="WIDTHxHEIGHT")
    parser.add_argument("--distinct", type=int, default=12, help="distinct frames cycled")
    parser.add_argument("--t0-ns", type=int, default=None, help="first stamp (default: wall clock now)")
    parser.add_argument("--frame-id", default="camera_color_optical_frame", help="header.frame_id")
    parser.add_argument("--wait", type=float, default=30.0, help="max seconds to wait for a subscriber")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))

    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node(f"stream_publisher_{int(time.time() * 1000) % 10**6}")
    pub = node.create_publisher(Image, args.topic, QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
    messages = []
    for rgb in _frames(args.distinct, width, height):
        msg = Image(height=height, width=width, encoding="rgb8", step=3 * width)
        msg.data = rgb.tobytes()
        msg.header.frame_id = args.frame_id
        messages.append(msg)
    end = time.monotonic() + args.wait
    while pub.get_subscription_count() == 0 and time.monotonic() < end:
        time.sleep(0.05)
    time.sleep(0.5)
    period_ns = int(1e9 / args.rate)
    t0_ns = args.t0_ns if args.t0_ns is not None else time.time_ns()
    started = time.monotonic()
    published = late = 0
    stamp = t0_ns
    try:
        while True:
            due = started + published / args.rate
            now = time.monotonic()
            if now - started >= args.duration:
                break
            if due > now:
                time.sleep(due - now)
            elif now - due > 1.0 / args.rate:
                late += 1
            msg = messages[published % len(messages)]
            stamp = t0_ns + published * period_ns
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            pub.publish(msg)
            published += 1
    except KeyboardInterrupt:
        pass
    wall = time.monotonic() - started
    time.sleep(0.5)   # let the last samples go out
    print(json.dumps({"published": published, "duration_s": wall, "achieved_hz": published / max(wall, 1e-9),
                      "late": late, "first_stamp_ns": t0_ns, "last_stamp_ns": stamp, "width": width,
                      "height": height, "subscribers": pub.get_subscription_count()}))
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

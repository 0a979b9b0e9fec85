"""Ask a running spatial_mllm_node a question over ROS (service or action) and print JSON.

    python -m ros2_spatial_mllm.ros.ask_client "How many boxes are there?" --via service
    python -m ros2_spatial_mllm.ros.ask_client "Which is closer?" --options "red box" "blue box" \
        --via action --node /spatial_mllm_node --num-frames 4 --timeout 60

Prints one JSON object per line on stdout: the response fields (frame stamps in ns, latency in
ms); with --via action also the feedback messages received. Exit status 0 when the node answered
(whatever its error code), 2 when the service/action was not reachable in time.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

FIELDS = ("success", "error_code", "error_message", "answer", "answer_kind", "value", "choice",
          "coverage", "num_tokens")


def outcome_to_dict(msg) -> dict:
    """Service response / action result -> plain dict (stamps as ns ints, NaN value -> None)."""
    out = {name: getattr(msg, name) for name in FIELDS}
    out["value"] = None if math.isnan(out["value"]) else out["value"]
    out["frame_stamps_ns"] = [s.sec * 1_000_000_000 + s.nanosec for s in msg.frame_stamps]
    out["latency_ms"] = {k: getattr(msg.latency, k) for k in msg.latency.get_fields_and_field_types()}
    return out


def build_request(cls, args) -> object:
    from builtin_interfaces.msg import Time
    req = cls(question=args.question, options=list(args.options or []), num_frames=args.num_frames,
              sampling=args.sampling, max_new_tokens=args.max_new_tokens)
    for field, ns in (("window_start", args.window_start_ns), ("window_end", args.window_end_ns)):
        setattr(req, field, Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000))
    return req


def ask_service(node, args) -> dict | None:
    import rclpy
    from ros2_spatial_mllm.srv import AskSpatial
    client = node.create_client(AskSpatial, f"{args.node}/ask")
    if not client.wait_for_service(timeout_sec=args.wait):
        return None
    future = client.call_async(build_request(AskSpatial.Request, args))
    rclpy.spin_until_future_complete(node, future, timeout_sec=args.timeout)
    return outcome_to_dict(future.result()) if future.done() else None


def ask_action(node, args) -> dict | None:
    import rclpy
    from rclpy.action import ActionClient
    from ros2_spatial_mllm.action import AskSpatial
    client = ActionClient(node, AskSpatial, f"{args.node}/ask")
    if not client.wait_for_server(timeout_sec=args.wait):
        return None
    feedback: list[dict] = []
    goal_future = client.send_goal_async(
        build_request(AskSpatial.Goal, args),
        feedback_callback=lambda fb: feedback.append(
            {"stage": fb.feedback.stage, "new_text": fb.feedback.new_text,
             "num_tokens": fb.feedback.num_tokens, "progress": fb.feedback.progress}))
    rclpy.spin_until_future_complete(node, goal_future, timeout_sec=args.wait)
    if not goal_future.done() or not goal_future.result().accepted:
        return None
    result_future = goal_future.result().get_result_async()
    deadline = time.monotonic() + args.timeout
    while not result_future.done() and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    if not result_future.done():
        return None
    out = outcome_to_dict(result_future.result().result)
    out["status"] = int(result_future.result().status)
    out["feedback"] = feedback
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", help="the question text")
    parser.add_argument("--options", nargs="*", help="multiple-choice options (without letters)")
    parser.add_argument("--via", choices=("service", "action", "both"), default="service",
                        help="ask through the ~/ask service, the ~/ask action, or both")
    parser.add_argument("--node", default="/spatial_mllm_node", help="fully qualified node name")
    parser.add_argument("--num-frames", type=int, default=0, help="frames for the model (0 = node default)")
    parser.add_argument("--sampling", default="", help="space_aware | uniform | latest ('' = node default)")
    parser.add_argument("--max-new-tokens", type=int, default=0, help="0 = node default")
    parser.add_argument("--window-start-ns", type=int, default=0, help="oldest stamp (ns), 0 = unbounded")
    parser.add_argument("--window-end-ns", type=int, default=0, help="newest stamp (ns), 0 = unbounded")
    parser.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the node")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for an answer")
    args = parser.parse_args(argv)
    try:
        import rclpy
        rclpy.init()
    except Exception as exc:  # noqa: BLE001 - CLI: one line, no traceback
        print(f"ask_client: cannot start rclpy: {exc}", file=sys.stderr)
        return 1
    node = rclpy.create_node("spatial_mllm_ask_client")
    status = 0
    try:
        for via in (("service", "action") if args.via == "both" else (args.via,)):
            result = (ask_service if via == "service" else ask_action)(node, args)
            if result is None:
                print(f"ask_client: no answer from {args.node}/ask ({via}) in time", file=sys.stderr)
                status = 2
                continue
            print(json.dumps({"via": via, **result}), flush=True)
    except KeyboardInterrupt:
        status = 130
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return status


if __name__ == "__main__":
    sys.exit(main())

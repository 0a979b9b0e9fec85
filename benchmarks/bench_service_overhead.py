"""Service round-trip overhead of spatial_mllm_node over a direct library call.

    python benchmarks/bench_service_overhead.py                          # tiny model, CPU
    python benchmarks/bench_service_overhead.py --iterations 10 --warmup 2 --frames 4   # quick run
    python benchmarks/bench_service_overhead.py --device cuda --model /models/spatial-mllm

One process, one model, the same frames: the node (rclpy lifecycle node, MultiThreadedExecutor
in a background thread) holds the frames in its FrameBuffer; each iteration asks the same
question once directly through the node's QueryEngine (`engine.ask`, the library path) and once
through the `~/ask` service from a client node over Fast DDS (serialisation, discovery-free
round trip, executor scheduling, response conversion). Calls are interleaved so drift hits both.
overhead = median(service) - median(direct) (and the median of per-iteration differences,
robust to drift on a shared machine). Also reported: the round trip of a request the
node rejects at validation (empty question): the ROS cost with no model work at all.
Writes benchmarks/results/service_overhead.json (target: <= 5 ms overhead on a 2-core CPU).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "service_overhead.json"


def _stats(samples_ms: list[float]) -> dict:
    ordered = sorted(samples_ms)
    return {"median": statistics.median(ordered), "mean": statistics.fmean(ordered),
            "p90": ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))],
            "min": ordered[0], "n": len(ordered)}


def run(args: argparse.Namespace) -> dict:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 200))
    import rclpy
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from ros2_spatial_mllm.buffer import Frame
    from ros2_spatial_mllm.node import SpatialMllmNode
    from ros2_spatial_mllm.query_engine import QueryRequest
    from ros2_spatial_mllm.srv import AskSpatial

    rclpy.init()
    overrides = [Parameter("geometry_source", value="none"), Parameter("device", value=args.device),
                 Parameter("model_path", value=args.model), Parameter("num_frames", value=args.frames),
                 Parameter("max_new_tokens", value=args.max_new_tokens),
                 Parameter("sampling", value="uniform"), Parameter("query_timeout_s", value=600.0)]
    node = SpatialMllmNode("bench_spatial_mllm_node", parameter_overrides=overrides)
    server = MultiThreadedExecutor(num_threads=4)
    server.add_node(node)
    spin_thread = threading.Thread(target=server.spin, daemon=True)
    spin_thread.start()
    try:
        if node.trigger_configure().name != "SUCCESS" or node.trigger_activate().name != "SUCCESS":
            raise RuntimeError("the node did not configure/activate (see the log above)")
        rng = np.random.default_rng(0)
        height, width = args.size
        for i in range(args.frames * 2):
            frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            node.buffer.add(Frame(stamp_ns=1_000_000_000 + i * 100_000_000, frame_id="camera", rgb=frame))
        client_node = rclpy.create_node("bench_service_client")
        client = client_node.create_client(AskSpatial, "/bench_spatial_mllm_node/ask")
        if not client.wait_for_service(timeout_sec=30.0):
            raise RuntimeError("service /bench_spatial_mllm_node/ask not available")
        client_exec = SingleThreadedExecutor()
        client_exec.add_node(client_node)
        question = "How many chairs are in the room?"
        request = AskSpatial.Request(question=question)

        def via_service(req) -> tuple[float, object]:
            started = time.perf_counter()
            future = client.call_async(req)
            client_exec.spin_until_future_complete(future, timeout_sec=600.0)
            return (time.perf_counter() - started) * 1e3, future.result()

        def direct() -> tuple[float, object]:
            started = time.perf_counter()
            result = node.engine.ask(QueryRequest(question=question))
            return (time.perf_counter() - started) * 1e3, result

        for _ in range(args.warmup):
            direct()
            via_service(request)
        direct_ms, service_ms, rejected_ms, tokens = [], [], [], set()
        for i in range(args.iterations):
            order = (direct, lambda: via_service(request)) if i % 2 == 0 else (lambda: via_service(request), direct)
            for call in order:
                elapsed, result = call()
                if isinstance(result, AskSpatial.Response):
                    assert result.success, result.error_message
                    service_ms.append(elapsed)
                    tokens.add(("service", result.num_tokens))
                else:
                    assert result.success, result.message
                    direct_ms.append(elapsed)
                    tokens.add(("direct", result.num_tokens))
            rejected_ms.append(via_service(AskSpatial.Request(question=""))[0])
        direct_s, service_s = _stats(direct_ms), _stats(service_ms)
        overhead = service_s["median"] - direct_s["median"]
        return {
            "benchmark": "service_overhead",
            "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
            "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
                     "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "")},
            "model": {k: v for k, v in (node.engine.model.info or {}).items() if isinstance(v, (str, int, float))},
            "device": args.device, "frames": args.frames, "image_hw": [height, width],
            "max_new_tokens": args.max_new_tokens, "tokens_generated": sorted(tokens),
            "direct_ms": direct_s, "service_ms": service_s,
            "overhead_ms": {"median": overhead,
                            "paired_median": statistics.median(s - d for s, d in zip(service_ms, direct_ms)),
                            "relative": overhead / direct_s["median"] if direct_s["median"] else None},
            "rejected_request_roundtrip_ms": _stats(rejected_ms),
            "target_overhead_ms": 5.0, "meets_target": overhead <= 5.0,
        }
    finally:
        server.shutdown()
        node._teardown()
        node.destroy_node()
        rclpy.try_shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=30, help="measured (direct, service) pairs")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured pairs first")
    parser.add_argument("--frames", type=int, default=4, help="frames given to the model per query")
    parser.add_argument("--size", type=lambda t: tuple(int(v) for v in t.split("x"))[::-1], default=(96, 128),
                        help="frame size WIDTHxHEIGHT (default 128x96)")
    parser.add_argument("--max-new-tokens", type=int, default=4, help="tokens generated per query")
    parser.add_argument("--device", default="cpu", help="torch device of the model")
    parser.add_argument("--model", default="", help="local checkpoint directory ('' = embedded tiny model)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON output path")
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.warmup < 0 or args.frames < 1:
        print("bench_service_overhead: --iterations >= 1, --warmup >= 0, --frames >= 1", file=sys.stderr)
        return 2
    try:
        result = run(args)
    except Exception as exc:  # noqa: BLE001 - CLI: one line, no traceback
        print(f"bench_service_overhead: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"direct {result['direct_ms']['median']:.2f} ms, service {result['service_ms']['median']:.2f} ms, "
          f"overhead {result['overhead_ms']['median']:.2f} ms (rejected-request round trip "
          f"{result['rejected_request_roundtrip_ms']['median']:.2f} ms) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

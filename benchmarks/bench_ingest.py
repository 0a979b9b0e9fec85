"""Ingestion benchmark: per-frame cost of decode + FrameBuffer.add, and highest drop-free rate.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ingest.py            # full run (~1 min)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ingest.py --quick    # tiny CPU run (~10 s)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ingest.py --selection-only   # query pick only (~5 s)

Measured path = what the node's image callback does after rclpy hands it a message: decode the
``sensor_msgs/Image`` payload (``msg.data``, an ``array.array`` as rclpy delivers it, taken from a
real deserialised message) or the ``CompressedImage`` JPEG, build a ``Frame`` and ``add`` it to a
bounded ``FrameBuffer`` (no decimation: every frame is kept, old ones evicted). rclpy's own CDR
deserialisation is reported separately (``deserialize_ms``), it is not ours to optimise.

Sustained rate: a producer thread offers frames at a fixed rate into a queue of depth 5 (the
sensor-data QoS depth); one consumer thread runs the measured path; a frame offered to a full
queue is dropped. The rate ladder doubles until a step drops frames or the producer cannot hold
the rate; the result is the highest rate with one full drop-free step (up to 3 attempts per rate,
since other processes on a shared machine stall single attempts; every attempt is kept in the JSON).
Also: the geometry worker's per-frame cost for sensor depth (unproject + voxelise, in its thread)
and the buffer.add cost while it listens. Query-time space-aware pick (16 of 128 sensor frames):
the worker's cached ``VoxelIndex`` (``select_space_aware``) vs the stateless
``space_aware_sample`` on the same voxel sets, with a check that both pick the same frames.
Writes benchmarks/results/ingest.json (``--selection-only`` updates just ``query_selection``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from ros2_spatial_mllm import image_codec
from ros2_spatial_mllm.buffer import Frame, FrameBuffer

SIZES = {"640x480": (480, 640), "1920x1080": (1080, 1920)}


def make_messages(hw, kind: str, count: int = 4):
    """Real rclpy messages (serialised + deserialised, so .data is what a callback gets)."""
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import CompressedImage, Image
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        base = cv2.resize(rng.integers(0, 256, (hw[0] // 16, hw[1] // 16, 3), dtype=np.uint8), hw[::-1])
        if kind == "rgb8":
            msg = Image()
            msg.height, msg.width, msg.step, data = image_codec.encode_image(base, "rgb8")
            msg.encoding, msg.data = "rgb8", data
        else:
            msg = CompressedImage()
            msg.format, data = image_codec.encode_compressed(base, "jpeg", 90)
            msg.data = data
        raw = serialize_message(msg)
        out.append((raw, deserialize_message(raw, type(msg))))
    return out


def ingest(msg, kind: str, buffer: FrameBuffer, stamp_ns: int) -> None:
    """The measured path: decode + Frame + buffer.add."""
    if kind == "rgb8":
        rgb = image_codec.decode_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.data, msg.is_bigendian)
    else:
        rgb = image_codec.as_rgb8(image_codec.decode_compressed(msg.format, msg.data))
    buffer.add(Frame(stamp_ns, "camera", rgb))


def per_frame_cost(hw, kind: str, iterations: int) -> dict:
    from rclpy.serialization import deserialize_message
    messages = make_messages(hw, kind)
    buffer = FrameBuffer(max_frames=64, max_bytes=4 << 30)
    times = []
    for i in range(iterations):
        msg = messages[i % len(messages)][1]
        start = time.perf_counter()
        ingest(msg, kind, buffer, (i + 1) * 10**7)
        times.append((time.perf_counter() - start) * 1e3)
    deser = []
    for raw, msg in messages * 3:
        start = time.perf_counter()
        deserialize_message(raw, type(msg))
        deser.append((time.perf_counter() - start) * 1e3)
    times = np.asarray(times[len(times) // 10:])     # drop warm-up
    assert buffer.stats()["rejected_total"] == 0
    blocks = np.array_split(times, 5)                 # load spikes of a shared machine hit some blocks
    return {"mean_ms": float(times.mean()), "p50_ms": float(np.median(times)),
            "p50_best_block_ms": float(min(np.median(b) for b in blocks)),
            "p99_ms": float(np.percentile(times, 99)), "iterations": iterations,
            "deserialize_ms": float(np.median(deser)),
            "payload_bytes": len(messages[0][1].data)}


def run_rate(hw, kind: str, rate_hz: float, duration_s: float) -> dict:
    messages = [m for _, m in make_messages(hw, kind)]
    buffer = FrameBuffer(max_frames=64, max_bytes=4 << 30)
    inbox: queue.Queue = queue.Queue(maxsize=5)
    offered = dropped = 0
    done = threading.Event()

    def consumer():
        while not (done.is_set() and inbox.empty()):
            try:
                i, msg = inbox.get(timeout=0.05)
            except queue.Empty:
                continue
            ingest(msg, kind, buffer, (i + 1) * 10**6)

    worker = threading.Thread(target=consumer)
    worker.start()
    period, start = 1.0 / rate_hz, time.perf_counter()
    n = int(rate_hz * duration_s)
    for i in range(n):
        target = start + i * period
        while (now := time.perf_counter()) < target:
            time.sleep(min(target - now, 0.001) if target - now > 0.0015 else 0)
        offered += 1
        try:
            inbox.put_nowait((i, messages[i % len(messages)]))
        except queue.Full:
            dropped += 1
    produce_s = time.perf_counter() - start
    done.set()
    worker.join()
    kept = buffer.stats()["kept"]
    achieved = offered / produce_s
    return {"rate_hz": rate_hz, "offered": offered, "dropped": dropped, "kept": kept,
            "achieved_offer_hz": achieved, "ok": dropped == 0 and achieved >= 0.97 * rate_hz}


def sustained(hw, kind: str, duration_s: float, start_hz: float, max_hz: float, attempts: int = 3) -> dict:
    """Double the rate until a step fails ``attempts`` times in a row (a shared machine's load
    spikes can stall one attempt; a rate counts as sustained when one full step is drop-free)."""
    ladder, best, rate = [], 0.0, start_hz
    while rate <= max_hz:
        for attempt in range(attempts):
            step = run_rate(hw, kind, rate, duration_s)
            step["attempt"] = attempt + 1
            ladder.append(step)
            if step["ok"]:
                break
        if not step["ok"]:
            break
        best = rate
        rate *= 2
    return {"max_drop_free_hz": best, "ladder": ladder, "step_duration_s": duration_s,
            "capped_at_max": best * 2 > max_hz}


def geometry_cost(hw, frames: int) -> dict:
    """Sensor-depth geometry per frame in the worker (unproject + voxelise), off the intake path."""
    from ros2_spatial_mllm.bag import synthetic
    from ros2_spatial_mllm.geometry_worker import GeometryWorker
    K = synthetic.intrinsics_for(hw[1], hw[0])
    poses = synthetic.orbit_poses(frames)
    small = (hw[0] // 4, hw[1] // 4)          # render small, upsample: the worker subsamples anyway
    rendered = [synthetic.render(synthetic.default_scene(), p, synthetic.intrinsics_for(small[1], small[0]), small)
                for p in poses]
    buffer = FrameBuffer(max_frames=frames + 1, max_bytes=4 << 30)
    worker = GeometryWorker(buffer, use_model=False)
    add_ms = []
    for i, (pose, (rgb, depth)) in enumerate(zip(poses, rendered)):
        rgb = cv2.resize(rgb, hw[::-1], interpolation=cv2.INTER_NEAREST)
        depth = cv2.resize(depth, hw[::-1], interpolation=cv2.INTER_NEAREST)
        start = time.perf_counter()
        buffer.add(Frame((i + 1) * 10**8, "camera", rgb, depth, K, pose))
        add_ms.append((time.perf_counter() - start) * 1e3)
    worker.wait_idle(60)
    worker.stop()
    stats = worker.stats()
    return {"frames": frames, "sensor_frames_done": stats["sensor"], "worker_mean_ms": stats["mean_compute_ms"],
            "buffer_add_with_worker_p50_ms": float(np.median(add_ms))}


def selection_cost(frames: int = 128, k: int = 16, repeats: int = 30) -> dict:
    """Query-time space-aware pick of ``k`` of ``frames`` sensor frames: indexed vs stateless."""
    from ros2_spatial_mllm.bag import synthetic
    from ros2_spatial_mllm.geometry_worker import GeometryWorker
    from ros2_spatial_mllm.sampling import space_aware_sample
    hw = (120, 160)                            # the worker subsamples depth to <= 64 px a side anyway
    K = synthetic.intrinsics_for(hw[1], hw[0])
    buffer = FrameBuffer(max_frames=frames + 1, max_bytes=4 << 30)
    worker = GeometryWorker(buffer, use_model=False, queue_size=frames + 1)
    for i, pose in enumerate(synthetic.orbit_poses(frames)):
        rgb, depth = synthetic.render(synthetic.default_scene(), pose, K, hw)
        buffer.add(Frame((i + 1) * 10**8, "camera", rgb, depth, K, pose))
    worker.wait_idle(120)
    worker.stop()
    stamps = buffer.stamps()
    voxel_sets, times = worker.voxels_for(stamps), [s * 1e-9 for s in stamps]

    def timed(fn):
        fn()                                   # first call: coarsening / id caches filled
        out = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1e3)
        return float(np.median(out)), float(np.min(out))
    indexed = worker.select_space_aware(stamps, k)
    stateless = space_aware_sample(voxel_sets, k, timestamps=times)
    index_med, index_min = timed(lambda: worker.select_space_aware(stamps, k))
    state_med, state_min = timed(lambda: space_aware_sample(voxel_sets, k, timestamps=times))
    return {"frames": len(stamps), "k": k, "union_voxels": indexed.num_voxels, "coverage": indexed.coverage,
            "same_picks": indexed.indices == stateless.indices, "index_median_ms": index_med,
            "index_min_ms": index_min, "stateless_median_ms": state_med, "stateless_min_ms": state_min,
            "load_average": list(os.getloadavg())}


def main() -> None:
    parser = argparse.ArgumentParser(description="decode + FrameBuffer ingestion benchmark")
    parser.add_argument("--quick", action="store_true", help="few iterations and short rate steps")
    parser.add_argument("--iterations", type=int, default=300, help="frames per per-frame measurement")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per sustained-rate step")
    parser.add_argument("--max-rate", type=float, default=1920.0, help="highest rate tried in the ladder (Hz)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ingest.json",
                        help="where to write the JSON results")
    parser.add_argument("--selection-only", action="store_true",
                        help="only measure the query-time space-aware pick; update that entry of --out")
    args = parser.parse_args()
    if args.selection_only:
        r = selection_cost(repeats=10 if args.quick else 30)
        print(f"space-aware pick {r['k']} of {r['frames']}: index {r['index_median_ms']:.2f} ms "
              f"(min {r['index_min_ms']:.2f}), stateless {r['stateless_median_ms']:.2f} ms "
              f"(min {r['stateless_min_ms']:.2f}), same picks {r['same_picks']}")
        old = json.loads(args.out.read_text()) if args.out.is_file() else {}
        old["query_selection"] = r
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(old, indent=1))
        return
    iterations, duration = (40, 0.5) if args.quick else (args.iterations, args.duration)
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "numpy": np.__version__, "opencv": cv2.__version__,
                           "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""),
                           "load_average_at_start": list(os.getloadavg())},
               "targets": {"rgb8_1080p_ms_per_frame": 1.0, "rgb8_1080p_sustained_hz": 60},
               "per_frame": {}, "sustained": {}, "geometry_worker": {}}
    for name, hw in SIZES.items():
        for kind in ("rgb8", "jpeg"):
            n = iterations if kind == "rgb8" else max(20, iterations // 5)
            results["per_frame"][f"{kind}_{name}"] = r = per_frame_cost(hw, kind, n)
            print(f"{kind:5s} {name:10s} decode+add p50 {r['p50_ms']:.4f} ms (best block "
                  f"{r['p50_best_block_ms']:.4f})  mean {r['mean_ms']:.4f} ms  "
                  f"p99 {r['p99_ms']:.4f} ms  (rclpy deserialize {r['deserialize_ms']:.3f} ms)")
    for name, kind, start_hz in (("1920x1080", "rgb8", 30.0), ("640x480", "rgb8", 30.0),
                                 ("640x480", "jpeg", 15.0), ("1920x1080", "jpeg", 15.0)):
        results["sustained"][f"{kind}_{name}"] = r = sustained(SIZES[name], kind, duration, start_hz, args.max_rate)
        print(f"{kind:5s} {name:10s} highest drop-free rate: {r['max_drop_free_hz']:.0f} Hz"
              + (" (ladder cap)" if r["capped_at_max"] else ""))
    for name, hw in SIZES.items():
        results["geometry_worker"][name] = r = geometry_cost(hw, 10 if args.quick else 30)
        print(f"geometry {name:10s} worker {r['worker_mean_ms']:.2f} ms/frame (sensor depth, off the callback); "
              f"add with worker listening p50 {r['buffer_add_with_worker_p50_ms']:.4f} ms")
    results["query_selection"] = r = selection_cost(repeats=10 if args.quick else 30)
    print(f"space-aware pick {r['k']} of {r['frames']}: index {r['index_median_ms']:.2f} ms, "
          f"stateless {r['stateless_median_ms']:.2f} ms, same picks {r['same_picks']}")
    rgb = results["per_frame"]["rgb8_1920x1080"]
    results["verdict"] = {
        "rgb8_1080p_ms_per_frame_ok": rgb["p50_ms"] <= 1.0,
        "rgb8_1080p_sustained_ok": results["sustained"]["rgb8_1920x1080"]["max_drop_free_hz"] >= 60}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}: {results['verdict']}")


if __name__ == "__main__":
    main()

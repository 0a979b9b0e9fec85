"""spatial-mllm-bag: make, inspect, replay rosbag2 bags and record the node's answers.

    spatial-mllm-bag make-synthetic /tmp/room_bag --storage mcap --frames 16 --size 128x96 --rate 4
    spatial-mllm-bag make-synthetic /tmp/vsi_bag --scene procedural --seed 3 --frames 32 --size 160x120
    spatial-mllm-bag info tests/data/bags/synthetic_room
    spatial-mllm-bag replay tests/data/bags/synthetic_room --rate 1.0 --wait-for-subscribers 5
    spatial-mllm-bag replay BAG --max --loop --topics /camera/image_raw /odom
    spatial-mllm-bag record-answers /tmp/answers_bag --topic /spatial_mllm/answers --duration 60

Tiny CPU run (no ROS graph needed): ``spatial-mllm-bag make-synthetic /tmp/b --frames 4`` then
``spatial-mllm-bag info /tmp/b``. replay/record-answers use rclpy (Fast DDS) and need the
package's interfaces (scripts/build_interfaces.sh) for record-answers.
Errors: one line on stderr, exit status 1 (2 for usage errors).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, e.g. 128x96, got {text!r}") from None
    if width < 8 or height < 8 or width > 4096 or height > 4096:
        raise argparse.ArgumentTypeError(f"size sides must be 8..4096, got {text!r}")
    return width, height


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spatial-mllm-bag", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    make = sub.add_parser("make-synthetic", help="render a synthetic room with known answers into a bag")
    make.add_argument("out_bag", type=Path, help="bag directory to create (must not exist)")
    make.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3", help="rosbag2 storage plugin")
    make.add_argument("--frames", type=int, default=16, help="number of camera frames (>= 1)")
    make.add_argument("--size", type=_size, default=(128, 96), help="image size WIDTHxHEIGHT")
    make.add_argument("--rate", type=_positive, default=4.0, help="camera rate in Hz (sets header stamps)")
    make.add_argument("--jpeg-quality", type=int, default=85, help="JPEG quality of the compressed topic")
    make.add_argument("--no-raw", action="store_true", help="omit the rgb8 Image topic")
    make.add_argument("--no-compressed", action="store_true", help="omit the JPEG CompressedImage topic")
    make.add_argument("--no-depth", action="store_true", help="omit the 32FC1 depth topic")
    make.add_argument("--chunk-compression", action="store_true", help="zstd-compress MCAP chunks (mcap only)")
    make.add_argument("--scene", choices=("boxes", "procedural"), default="boxes",
                      help="boxes: numpy box room (default); procedural: the data engine's rendered rooms "
                           "with VSI-Bench questions (needs embreex/trimesh)")
    make.add_argument("--seed", type=int, default=0, help="procedural scene seed")

    info = sub.add_parser("info", help="print topics, counts, duration (and answers.json facts) as JSON")
    info.add_argument("bag", type=Path, help="bag directory")

    replay = sub.add_parser("replay", help="publish a bag's image/depth/camera_info/odom topics with rclpy")
    replay.add_argument("bag", type=Path, help="bag directory (sqlite3 or MCAP)")
    pace = replay.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=_positive, default=1.0, help="playback speed factor (1.0 = real time)")
    pace.add_argument("--max", action="store_true", help="publish as fast as possible")
    replay.add_argument("--topics", nargs="+", help="topics to publish (default: all image/info/odom/tf topics)")
    replay.add_argument("--loop", action="store_true", help="restart at the end (stamps repeat: the node sees a time jump)")
    replay.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="SEC",
                        help="wait up to SEC seconds until an image topic has a subscriber before starting")
    replay.add_argument("--best-effort", action="store_true", help="best-effort publishers (default reliable)")
    replay.add_argument("--qos-depth", type=int, default=100, help="publisher history depth")

    record = sub.add_parser("record-answers", help="record the node's SpatialAnswer messages into a bag")
    record.add_argument("out_bag", type=Path, help="bag directory to create (must not exist)")
    record.add_argument("--topic", default="/spatial_mllm/answers", help="answer topic to record")
    record.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3", help="rosbag2 storage plugin")
    record.add_argument("--duration", type=_positive, default=None, help="stop after this many seconds")
    record.add_argument("--max-messages", type=int, default=None, help="stop after this many messages")
    return parser


def _info(bag: Path) -> dict:
    from rosbags.rosbag2 import Reader
    with Reader(bag) as reader:
        out = {"path": str(bag), "storage": "mcap" if list(bag.glob("*.mcap")) else "sqlite3",
               "duration_s": reader.duration * 1e-9, "start_ns": reader.start_time,
               "messages": reader.message_count,
               "topics": {c.topic: {"type": c.msgtype, "count": c.msgcount} for c in reader.connections}}
    answers = bag / "answers.json"
    if answers.is_file():
        out["answers"] = json.loads(answers.read_text()).get("facts")
    return out


def _run(args: argparse.Namespace) -> int:
    if args.command == "make-synthetic":
        from ros2_spatial_mllm.bag.io import write_synthetic_bag
        if args.out_bag.exists():
            raise ValueError(f"{args.out_bag} exists already; choose a new directory")
        if args.frames < 1:
            raise ValueError(f"--frames must be >= 1, got {args.frames}")
        answers = write_synthetic_bag(args.out_bag, args.storage, args.frames, args.size, args.rate,
                                      args.jpeg_quality, raw=not args.no_raw, compressed=not args.no_compressed,
                                      depth=not args.no_depth, chunk_compression=args.chunk_compression,
                                      scene=args.scene, seed=args.seed)
        print(f"wrote {args.out_bag} ({args.storage}, {args.frames} frames, "
              f"{len(answers['questions'])} questions in {args.out_bag / 'answers.json'})")
    elif args.command == "info":
        if not (args.bag / "metadata.yaml").is_file():
            raise ValueError(f"{args.bag} is not a rosbag2 directory (no metadata.yaml)")
        print(json.dumps(_info(args.bag), indent=1))
    elif args.command == "replay":
        from ros2_spatial_mllm.bag.replay import replay_bag
        if not (args.bag / "metadata.yaml").is_file():
            raise ValueError(f"{args.bag} is not a rosbag2 directory (no metadata.yaml)")
        stats = replay_bag(args.bag, rate=None if args.max else args.rate, topics=args.topics, loop=args.loop,
                           wait_for_subscribers_s=args.wait_for_subscribers, qos_depth=args.qos_depth,
                           best_effort=args.best_effort)
        print(f"published {stats.published} messages in {stats.wall_s:.2f} s "
              f"({stats.loops} full pass{'es' if stats.loops != 1 else ''}"
              f"{', interrupted' if stats.interrupted else ''}): {json.dumps(stats.per_topic)}")
    elif args.command == "record-answers":
        from ros2_spatial_mllm.bag.record import record_topic
        if args.out_bag.exists():
            raise ValueError(f"{args.out_bag} exists already; choose a new directory")
        count = record_topic(args.out_bag, args.topic, storage=args.storage, duration_s=args.duration,
                             max_messages=args.max_messages)
        print(f"recorded {count} messages from {args.topic} into {args.out_bag}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # CLI contract: one line on stderr, no traceback
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"spatial-mllm-bag {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

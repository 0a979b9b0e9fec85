"""rosbag2 reading and writing with the ``rosbags`` library (no rclpy, no ROS install).

* ``typestore()``: ROS 2 Kilted message types + this package's msg/*.msg (SpatialAnswer, Latency)
  registered from the .msg files, so answers can be (de)serialised and written to bags.
* ``write_synthetic_bag(...)``: renders the synthetic room (``bag.synthetic``) along an orbit and
  writes rgb8 Image, JPEG CompressedImage, 32FC1 depth Image, CameraInfo and Odometry per frame
  (sqlite3 or MCAP storage), plus ``answers.json`` (scene facts + questions with known answers)
  inside the bag directory.
* ``read_messages(path, topics)``: (topic, msgtype, bag time ns, deserialised message) tuples.
* ``frames_from_bag(path)``: the bag's rgb (raw or compressed) images as ``buffer.Frame`` objects,
  with depth/intrinsics/pose attached when the bag carries them (matched by header stamp).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from ros2_spatial_mllm import image_codec
from ros2_spatial_mllm.bag import synthetic
from ros2_spatial_mllm.buffer import Frame

__all__ = ["typestore", "write_synthetic_bag", "read_messages", "frames_from_bag", "TOPICS",
           "PACKAGE_MSG_DIR", "ANSWERS_FILE"]

PACKAGE_MSG_DIR = Path(__file__).resolve().parents[2] / "msg"
ANSWERS_FILE = "answers.json"
TOPICS = {
    "image": "/camera/image_raw",
    "compressed": "/camera/image_raw/compressed",
    "depth": "/camera/depth/image_raw",
    "camera_info": "/camera/camera_info",
    "odom": "/odom",
}
CAMERA_FRAME, ODOM_FRAME = "camera_optical_frame", "odom"
START_STAMP_NS = 1_700_000_000 * 10**9   # fixed so the shipped bag is reproducible


@functools.lru_cache(maxsize=4)
def typestore(msg_dir: str | None = None):
    """Kilted typestore with ``ros2_spatial_mllm/msg/*`` registered from ``msg_dir`` (default:
    the repository's msg/ directory; silently skipped when it does not exist)."""
    store = get_typestore(Stores.ROS2_KILTED)
    folder = Path(msg_dir) if msg_dir else PACKAGE_MSG_DIR
    types: dict = {}
    for path in sorted(folder.glob("*.msg")) if folder.is_dir() else []:
        types.update(get_types_from_msg(path.read_text(), f"ros2_spatial_mllm/msg/{path.stem}"))
    if types:
        store.register(types)
    return store


def _header(store, stamp_ns: int, frame_id: str):
    t = store.types
    return t["std_msgs/msg/Header"](
        stamp=t["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9),
        frame_id=frame_id)


def _image_msg(store, stamp_ns: int, array: np.ndarray, encoding: str):
    height, width, step, data = image_codec.encode_image(array, encoding)
    return store.types["sensor_msgs/msg/Image"](
        header=_header(store, stamp_ns, CAMERA_FRAME), height=height, width=width, encoding=encoding,
        is_bigendian=0, step=step, data=np.frombuffer(data, np.uint8))


def _camera_info_msg(store, stamp_ns: int, K: np.ndarray, hw: tuple[int, int]):
    t = store.types
    P = np.zeros((3, 4))
    P[:, :3] = K
    return t["sensor_msgs/msg/CameraInfo"](
        header=_header(store, stamp_ns, CAMERA_FRAME), height=hw[0], width=hw[1],
        distortion_model="plumb_bob", d=np.zeros(5), k=K.reshape(-1).astype(np.float64),
        r=np.eye(3).reshape(-1), p=P.reshape(-1), binning_x=0, binning_y=0,
        roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def _quat_xyzw(R: np.ndarray) -> np.ndarray:
    """Rotation matrix [3, 3] -> unit quaternion (x, y, z, w)."""
    m = R
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = [0.0, 0.0, 0.0, (m[k, j] - m[j, k]) / s]
        q[i] = 0.25 * s
        q[j] = (m[j, i] + m[i, j]) / s
        q[k] = (m[k, i] + m[i, k]) / s
    q = np.asarray(q, np.float64)
    return q / np.linalg.norm(q)


def odom_message(store, stamp_ns: int, world_from_camera: np.ndarray):
    """nav_msgs/Odometry in frame ``odom`` with child frame = camera optical frame."""
    t = store.types
    qx, qy, qz, qw = _quat_xyzw(world_from_camera[:3, :3])
    x, y, z = (float(v) for v in world_from_camera[:3, 3])
    pose = t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=x, y=y, z=z),
                                       orientation=t["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw))
    zero = t["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)
    return t["nav_msgs/msg/Odometry"](
        header=_header(store, stamp_ns, ODOM_FRAME), child_frame_id=CAMERA_FRAME,
        pose=t["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=np.zeros(36)),
        twist=t["geometry_msgs/msg/TwistWithCovariance"](
            twist=t["geometry_msgs/msg/Twist"](linear=zero, angular=zero), covariance=np.zeros(36)))


def _box_room_frames(frames: int, size: tuple[int, int]):
    width, height = size
    scene = synthetic.default_scene()
    poses = synthetic.orbit_poses(frames)
    K = synthetic.intrinsics_for(width, height)
    rendered = [synthetic.render(scene, pose, K, (height, width)) for pose in poses]
    facts = synthetic.scene_facts(scene, poses)
    return (np.stack([r for r, _ in rendered]), np.stack([d for _, d in rendered]), K, poses,
            {"facts": facts, "questions": synthetic.scene_questions(facts)})


def write_synthetic_bag(out: str | Path, storage: str = "sqlite3", frames: int = 16,
                        size: tuple[int, int] = (128, 96), rate_hz: float = 4.0, jpeg_quality: int = 85,
                        raw: bool = True, compressed: bool = True, depth: bool = True,
                        chunk_compression: bool = False, scene: str = "boxes", seed: int = 0) -> dict:
    """Render a scene with known answers and write a rosbag2 at ``out`` (must not exist).

    scene: "boxes" (``bag.synthetic``'s box room, numpy only, byte-reproducible) or "procedural"
    (the data engine's procedural room ``seed`` with its VSI-Bench questions). ``size`` is
    (width, height). ``chunk_compression`` zstd-compresses MCAP chunks (standard MCAP, read
    natively by rosbag2_storage_mcap). Returns the answers dict also written to ``out/answers.json``.
    """
    if storage not in ("sqlite3", "mcap"):
        raise ValueError(f"storage must be sqlite3 or mcap, got {storage!r}")
    if scene not in ("boxes", "procedural"):
        raise ValueError(f"scene must be boxes or procedural, got {scene!r}")
    if frames < 1 or rate_hz <= 0 or min(size) < 8:
        raise ValueError(f"need frames >= 1, rate > 0, sides >= 8 (got {frames}, {rate_hz}, {size})")
    out = Path(out)
    width, height = size
    if scene == "boxes":
        rgbs, depths, K, poses, known = _box_room_frames(frames, size)
    else:
        from ros2_spatial_mllm.bag.procedural import procedural_frames
        rgbs, depths, K, poses, known = procedural_frames(seed, frames, size)
    store = typestore()
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    writer = Writer(out, version=9, storage_plugin=plugin)
    if chunk_compression and storage == "mcap":
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    stamps = [START_STAMP_NS + int(round(i * 1e9 / rate_hz)) for i in range(frames)]
    with writer:
        conns = {"camera_info": writer.add_connection(TOPICS["camera_info"], "sensor_msgs/msg/CameraInfo", typestore=store),
                 "odom": writer.add_connection(TOPICS["odom"], "nav_msgs/msg/Odometry", typestore=store)}
        if raw:
            conns["image"] = writer.add_connection(TOPICS["image"], "sensor_msgs/msg/Image", typestore=store)
        if compressed:
            conns["compressed"] = writer.add_connection(TOPICS["compressed"], "sensor_msgs/msg/CompressedImage",
                                                        typestore=store)
        if depth:
            conns["depth"] = writer.add_connection(TOPICS["depth"], "sensor_msgs/msg/Image", typestore=store)

        def put(kind: str, stamp: int, msg, msgtype: str) -> None:
            writer.write(conns[kind], stamp, bytes(store.serialize_cdr(msg, msgtype)))

        for stamp, pose, rgb, depth_m in zip(stamps, poses, rgbs, depths):
            put("camera_info", stamp, _camera_info_msg(store, stamp, K, (height, width)), "sensor_msgs/msg/CameraInfo")
            put("odom", stamp, odom_message(store, stamp, pose), "nav_msgs/msg/Odometry")
            if depth:   # depth/info/odom before the image: a subscriber pairing at image time finds them
                put("depth", stamp, _image_msg(store, stamp, depth_m, "32FC1"), "sensor_msgs/msg/Image")
            if raw:
                put("image", stamp, _image_msg(store, stamp, rgb, "rgb8"), "sensor_msgs/msg/Image")
            if compressed:
                fmt, data = image_codec.encode_compressed(rgb, "jpeg", jpeg_quality)
                msg = store.types["sensor_msgs/msg/CompressedImage"](
                    header=_header(store, stamp, CAMERA_FRAME), format=fmt, data=np.frombuffer(data, np.uint8))
                put("compressed", stamp, msg, "sensor_msgs/msg/CompressedImage")
    answers = {
        "generator": "spatial-mllm-bag make-synthetic",
        "command": (f"spatial-mllm-bag make-synthetic {out.name} --storage {storage} --frames {frames} "
                    f"--size {width}x{height} --rate {rate_hz:g}"
                    + (f" --scene procedural --seed {seed}" if scene == "procedural" else "")
                    + (" --chunk-compression" if chunk_compression else "")),
        "scene": scene, "storage": storage, "frames": frames, "size": [width, height], "rate_hz": rate_hz,
        "topics": {k: v for k, v in TOPICS.items() if k in conns},
        "frame_id": CAMERA_FRAME, "stamps_ns": stamps,
        "intrinsics": np.asarray(K).tolist(),
        "conventions": "world z up, metres; odom child frame = camera optical frame "
                       "(OpenCV axes), so odom pose = world_from_camera; depth along optical axis, NaN = no hit",
        **known,
    }
    (out / ANSWERS_FILE).write_text(json.dumps(answers, indent=1))
    return answers


def read_messages(path: str | Path, topics: Sequence[str] | None = None) -> Iterator[tuple[str, str, int, object]]:
    """Yield (topic, msgtype, bag timestamp ns, deserialised message) in bag time order."""
    store = typestore()
    with Reader(path) as reader:
        conns = [c for c in reader.connections if not topics or c.topic in topics]
        for conn, timestamp, raw in reader.messages(connections=conns):
            yield conn.topic, conn.msgtype, timestamp, store.deserialize_cdr(raw, conn.msgtype)


def _stamp_ns(msg) -> int:
    return int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec)


def frames_from_bag(path: str | Path, image_topic: str | None = None) -> list[Frame]:
    """Decode a bag's images into Frames (raw topic preferred, else compressed), attaching depth,
    intrinsics (latest camera_info) and pose (odometry with the same header stamp) when present."""
    depth, pose, K = {}, {}, None
    images: list[tuple[int, str, np.ndarray]] = []
    with Reader(path) as reader:
        by_type = {c.topic: c.msgtype for c in reader.connections}
    if image_topic is None:
        image_topic = TOPICS["image"] if TOPICS["image"] in by_type else TOPICS["compressed"]
    for topic, msgtype, _, msg in read_messages(path):
        if topic == image_topic:
            if msgtype.endswith("CompressedImage"):
                rgb = image_codec.as_rgb8(image_codec.decode_compressed(msg.format, msg.data))
            else:
                rgb = image_codec.decode_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.data,
                                             msg.is_bigendian)
            images.append((_stamp_ns(msg), msg.header.frame_id, rgb))
        elif msgtype == "sensor_msgs/msg/Image" and msg.encoding in ("32FC1", "16UC1"):
            depth[_stamp_ns(msg)] = image_codec.decode_depth(msg.encoding, msg.height, msg.width, msg.step,
                                                             msg.data, msg.is_bigendian)
        elif msgtype == "sensor_msgs/msg/CameraInfo":
            K = np.asarray(msg.k, np.float64).reshape(3, 3)
        elif msgtype == "nav_msgs/msg/Odometry":
            p, q = msg.pose.pose.position, msg.pose.pose.orientation
            pose[_stamp_ns(msg)] = _pose_matrix((p.x, p.y, p.z), (q.x, q.y, q.z, q.w))
    return [Frame(s, fid, rgb, depth.get(s), K if s in depth else None, pose.get(s)) for s, fid, rgb in images]


def _pose_matrix(xyz, q_xyzw) -> np.ndarray:
    x, y, z, w = q_xyzw
    T = np.eye(4)
    T[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                 [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                 [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]
    T[:3, 3] = xyz
    return T

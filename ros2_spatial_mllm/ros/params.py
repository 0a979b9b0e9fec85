"""The node's parameters: one dataclass, mirrored 1:1 by config/*.yaml (`/**: ros__parameters:`).

`NodeConfig` is the single source of truth: the node declares one ROS parameter per field (same
name, type and default, description from the field metadata), reads them back on configure and
calls `NodeConfig.validate()`; tests compare the YAML files and launch files against
`NodeConfig.parameter_names()`. This module does not import rclpy.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ros2_spatial_mllm.numeric_answer import NUMERIC_ANSWER_MODES

SAMPLING_MODES = ("space_aware", "uniform", "latest")
IMAGE_TRANSPORTS = ("raw", "compressed")
RELIABILITIES = ("best_effort", "reliable")
GEOMETRY_SOURCES = ("auto", "sensor", "model", "none")
DTYPES = ("auto", "float32", "float16", "bfloat16")
BACKENDS = ("torch", "onnxruntime", "tensorrt")
ENGINE_PRECISIONS = ("fp32", "fp16", "bf16", "int8", "fp8")
DECODE_MODES = ("eager", "static", "compiled")  # = backends/llm.py DECODE_MODES (no torch import here)


def _p(default, description: str, **constraints):
    return field(default=default, metadata={"description": description, **constraints})


@dataclass
class NodeConfig:
    """Every parameter of `spatial_mllm_node`, with its default."""

    # lifecycle / model
    autostart: bool = _p(False, "configure + activate at start-up (no lifecycle manager needed)")
    model_path: str = _p("", "local checkpoint directory; empty = the embedded tiny model")
    model_preset: str = _p("tiny", "preset name used when model_path is empty")
    device: str = _p("cpu", "torch device: cpu, cuda, cuda:0, ... (auto = cuda if available)")
    dtype: str = _p("auto", "model dtype", choices=DTYPES)
    backend: str = _p("torch", "runtime of the 2D/spatial encoders and connector", choices=BACKENDS)
    onnx_dir: str = _p("", "exported ONNX folder (spatial-mllm-engines export); needed by "
                       "onnxruntime and tensorrt")
    engine_cache_dir: str = _p("", "TensorRT engine cache; empty = the engines package default")
    engine_precision: str = _p("fp16", "TensorRT engine precision", choices=ENGINE_PRECISIONS)
    allow_engine_build: bool = _p(False, "build a missing TensorRT engine at activate (minutes); "
                                  "false = fail activate with the cache's reason")
    decode_mode: str = _p("eager", "LLM decode path: eager (dynamic KV cache), static (static KV "
                          "cache reused across queries), compiled (static + torch.compile CUDA "
                          "graphs, CUDA only, compiled at activate)", choices=DECODE_MODES)
    numeric_answers: str = _p("expected_mra", "numeric replies: expected_mra (the number with the highest "
                              "expected relative accuracy under the model's own distribution) or greedy "
                              "(digit by digit, the reference's decoding)", choices=NUMERIC_ANSWER_MODES)
    # image input
    image_topic: str = _p("image", "image topic (relative names remap cleanly); with "
                          "image_transport=compressed the node subscribes to <image_topic>/compressed")
    image_transport: str = _p("raw", "sensor_msgs/Image (raw) or CompressedImage (compressed)",
                              choices=IMAGE_TRANSPORTS)
    qos_reliability: str = _p("best_effort", "image QoS reliability (sensor-data default)",
                              choices=RELIABILITIES)
    qos_depth: int = _p(5, "image QoS history depth", min=1, max=1000)
    # optional geometry inputs; empty topic = not subscribed
    depth_topic: str = _p("", "depth image (16UC1 mm or 32FC1 m), aligned to the colour camera")
    camera_info_topic: str = _p("", "sensor_msgs/CameraInfo of the colour camera")
    odom_topic: str = _p("", "nav_msgs/Odometry giving the camera pose in a fixed world frame")
    odom_child_is_optical: bool = _p(False, "odometry child frame is the camera optical frame "
                                     "(z forward, x right); false = a ROS body frame (x forward, "
                                     "z up) at the camera, rotated to optical axes by the node")
    geometry_source: str = _p("auto", "per-frame geometry for space-aware sampling: sensor "
                              "(depth+pose), model (spatial-encoder heads), auto, none",
                              choices=GEOMETRY_SOURCES)
    sync_tolerance_s: float = _p(0.05, "max stamp difference when pairing depth/odometry with a "
                                 "colour frame; odometry on both sides within 2x this is "
                                 "interpolated", min=0.0, max=10.0)
    sync_max_wait_s: float = _p(1.0, "a colour frame waits at most this long (wall time) for its "
                                "depth/pose/camera_info before entering the buffer without them",
                                min=0.0, max=60.0)
    sync_queue_size: int = _p(32, "colour frames waiting for their depth/pose at most; the oldest "
                              "goes to the buffer unpaired beyond this", min=1, max=10000)
    sync_late_pairing_s: float = _p(5.0, "a frame that entered the buffer without depth/pose still "
                                    "gets sensor geometry if they arrive (by stamp) within this "
                                    "time; the geometry worker waits that long before the model "
                                    "path (0 = off)", min=0.0, max=60.0)
    tf_world_frame: str = _p("", "fixed frame of TF poses (odom, map, ...); set = the camera pose "
                             "of each frame comes from /tf + /tf_static (tf2_msgs) as "
                             "lookup(tf_world_frame, camera frame, stamp); empty = TF off")
    camera_frame: str = _p("", "TF frame of the colour camera, an optical frame (z forward, x "
                           "right); empty = the image header's frame_id")
    tf_cache_s: float = _p(10.0, "TF history kept per transform, seconds", min=0.1, max=3600.0)
    # frame buffer (keyframes)
    buffer_max_frames: int = _p(256, "frames kept in the ring buffer", min=1, max=100000)
    buffer_max_mb: float = _p(512.0, "bytes kept in the ring buffer, MiB", min=1.0, max=1.0e6)
    keyframe_min_interval_s: float = _p(0.0, "drop frames closer than this to the last kept one",
                                        min=0.0, max=3600.0)
    keyframe_min_translation_m: float = _p(0.0, "with a pose: keep a frame only after this much "
                                           "motion (0 = off)", min=0.0, max=100.0)
    keyframe_min_rotation_deg: float = _p(0.0, "with a pose: or after this much rotation (0 = off)",
                                          min=0.0, max=360.0)
    keyframe_max_interval_s: float = _p(2.0, "keep a frame at least this often even when still",
                                        min=0.0, max=3600.0)
    # queries
    num_frames: int = _p(8, "frames given to the model when a request says 0", min=1, max=256)
    sampling: str = _p("space_aware", "frame selection when a request leaves it empty",
                       choices=SAMPLING_MODES)
    max_new_tokens: int = _p(32, "generation budget when a request says 0", min=1, max=4096)
    max_question_chars: int = _p(2000, "longer questions are rejected with BAD_REQUEST",
                                 min=1, max=1000000)
    max_request_bytes: int = _p(10000, "question + options larger than this (UTF-8) -> BAD_REQUEST",
                                min=16, max=10000000)
    query_queue_size: int = _p(2, "queries waiting behind the running one; more -> BUSY",
                               min=1, max=1000)
    query_timeout_s: float = _p(60.0, "queue wait + inference budget per query -> TIMEOUT",
                                min=0.1, max=86400.0)
    publish_answers: bool = _p(True, "publish every answered query on ~/answers")
    publish_views: bool = _p(True, "after each answer publish ~/chosen_frames/compressed, ~/coverage "
                             "and ~/trajectory (RViz/Foxglove)")
    views_frame_id: str = _p("", "frame of ~/coverage and ~/trajectory; empty = tf_world_frame, "
                             "else the odometry's frame")
    # diagnostics
    diagnostics_period_s: float = _p(1.0, "period of /diagnostics", min=0.05, max=3600.0)

    @classmethod
    def parameter_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def defaults(cls) -> dict:
        return dataclasses.asdict(cls())

    @classmethod
    def describe(cls, name: str) -> str:
        meta = {f.name: f.metadata for f in dataclasses.fields(cls)}[name]
        text = meta["description"]
        if "choices" in meta:
            text += f" (one of: {', '.join(meta['choices'])})"
        if "min" in meta:
            text += f" [{meta['min']} .. {meta['max']}]"
        return text

    @classmethod
    def from_dict(cls, values: dict) -> "NodeConfig":
        """Build from {name: value}; unknown names raise ValueError; ints are accepted for floats."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown parameter(s): {', '.join(unknown)}")
        kwargs = {}
        for name, value in values.items():
            expected = type(known[name].default)
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise ValueError(f"parameter {name} must be {expected.__name__}, got {value!r}")
            kwargs[name] = value
        config = cls(**kwargs)
        config.validate()
        return config

    def validate(self) -> "NodeConfig":
        """Raise ValueError naming every parameter out of its range or choices."""
        problems = []
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if "choices" in meta and value not in meta["choices"]:
                problems.append(f"{f.name}={value!r} not in {list(meta['choices'])}")
            if "min" in meta and not (meta["min"] <= value <= meta["max"]):
                problems.append(f"{f.name}={value!r} outside [{meta['min']}, {meta['max']}]")
        if not self.image_topic.strip():
            problems.append("image_topic must not be empty")
        if self.backend != "torch" and not self.onnx_dir:
            problems.append(f"backend={self.backend} needs onnx_dir")
        if self.decode_mode == "compiled" and self.device.strip().lower().startswith("cpu"):
            problems.append(f"decode_mode=compiled needs a CUDA device (device={self.device!r}); "
                            "use static or eager on CPU")
        if self.geometry_source == "sensor" and not (self.depth_topic and self.camera_info_topic):
            problems.append("geometry_source=sensor needs depth_topic and camera_info_topic")
        if self.tf_world_frame.strip() and self.odom_topic:
            problems.append("set either odom_topic or tf_world_frame as the pose source, not both")
        if problems:
            raise ValueError("invalid parameters: " + "; ".join(problems))
        return self

    def backend_options(self) -> dict:
        """Keyword options for SpatialMLLM.load(backend_options=...)."""
        return {"onnx_dir": self.onnx_dir, "engine_cache_dir": self.engine_cache_dir,
                "engine_precision": self.engine_precision, "allow_engine_build": self.allow_engine_build,
                "decode_mode": self.decode_mode, "numeric_answers": self.numeric_answers}

    def engine_config(self):
        """The QueryEngine's settings (query_engine.EngineConfig); the hard limits stay above the defaults."""
        from ros2_spatial_mllm.query_engine import EngineConfig  # no rclpy there either
        return EngineConfig(
            num_frames=self.num_frames, max_num_frames=max(64, self.num_frames),
            sampling=self.sampling, max_new_tokens=self.max_new_tokens,
            max_new_tokens_limit=max(512, self.max_new_tokens), timeout_s=self.query_timeout_s,
            max_timeout_s=max(600.0, self.query_timeout_s), max_waiting=self.query_queue_size,
            max_question_chars=self.max_question_chars, max_request_bytes=self.max_request_bytes)

    def subscribed_image_topic(self) -> str:
        """`image_topic`, with image_transport's `/compressed` suffix for compressed input."""
        topic = self.image_topic.rstrip("/")
        return f"{topic}/compressed" if self.image_transport == "compressed" else topic

    def frame_buffer(self):
        """The FrameBuffer these parameters describe (capacity and keyframe gates)."""
        from ros2_spatial_mllm.buffer import FrameBuffer
        return FrameBuffer(max_frames=self.buffer_max_frames, max_bytes=self.buffer_max_bytes,
                           min_interval_s=self.keyframe_min_interval_s,
                           min_translation_m=self.keyframe_min_translation_m,
                           min_rotation_deg=self.keyframe_min_rotation_deg,
                           max_interval_s=self.keyframe_max_interval_s)

    def resolved_device(self) -> str:
        """`device`, with "auto" -> "cuda" when torch sees a GPU, else "cpu"."""
        if self.device != "auto":
            return self.device
        try:
            import torch
            return "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            return "cpu"

    @property
    def buffer_max_bytes(self) -> int:
        return int(self.buffer_max_mb * (1 << 20))

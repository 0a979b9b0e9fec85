"""What an answer was based on, for RViz / Foxglove: published after every answered query.

    pub ~/chosen_frames/compressed  sensor_msgs/CompressedImage  one per frame given to the model,
                                     with the frame's own source stamp and camera frame_id
    pub ~/coverage                  visualization_msgs/MarkerArray  voxels observed in the query's
                                     span (grey) and those the chosen frames see (green)
    pub ~/trajectory                visualization_msgs/MarkerArray  camera path over that span, an
                                     arrow per chosen camera

The messages are built on one background thread (JPEG encoding 16 frames costs tens of ms), so
the service/action reply never waits for them; while a build is running, a newer answer
replaces the queued one (views of stale answers are dropped, not queued up).
"""
from __future__ import annotations

import threading

import numpy as np
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage
from visualization_msgs.msg import MarkerArray

from ros2_spatial_mllm.viz import chosen_frame_messages, coverage_markers, trajectory_markers

COVERAGE_VOXEL_M = 0.08
# Latched (transient local) so a viewer that connects after the answer still gets the last one.
VIEW_QOS = QoSProfile(depth=64, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


class AnswerViews:
    """Publishers + a one-slot background builder; `submit()` is cheap and never raises."""

    def __init__(self, node, max_side: int = 640) -> None:
        self._node = node
        self._max_side = max_side
        self._frames_pub = node.create_publisher(CompressedImage, "~/chosen_frames/compressed", VIEW_QOS)
        self._coverage_pub = node.create_publisher(MarkerArray, "~/coverage", VIEW_QOS)
        self._trajectory_pub = node.create_publisher(MarkerArray, "~/trajectory", VIEW_QOS)
        self._cv = threading.Condition()
        self._job = None
        self._stopped = False
        self.published = 0
        self._thread = threading.Thread(target=self._run, name="answer_views", daemon=True)
        self._thread.start()

    def submit(self, buffer, geometry, frame_stamps_ns, world_frame: str, stamp_ns: int) -> None:
        """Queue views of one answer (frames are looked up now, while they are still buffered)."""
        if buffer is None or not frame_stamps_ns:
            return
        chosen = [f for f in (buffer.get(s) for s in frame_stamps_ns) if f is not None]
        span = buffer.window(min(frame_stamps_ns), max(frame_stamps_ns))
        with self._cv:
            self._job = (chosen, span, geometry, set(frame_stamps_ns), world_frame, stamp_ns)
            self._cv.notify()

    def close(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()
        self._thread.join(timeout=2.0)

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._job is None and not self._stopped:
                    self._cv.wait()
                if self._stopped:
                    return
                job, self._job = self._job, None
            try:
                self._publish(*job)
                self.published += 1
            except Exception as exc:  # noqa: BLE001 - views must never take the node down
                self._node.get_logger().warning(f"answer views not published: {exc}")

    def _publish(self, chosen, span, geometry, chosen_stamps, world_frame: str, stamp_ns: int) -> None:
        for msg in chosen_frame_messages(chosen, compressed=True, max_side=self._max_side):
            self._frames_pub.publish(msg)
        positions = [i for i, f in enumerate(span) if f.stamp_ns in chosen_stamps]
        if geometry is not None:
            voxels = geometry.voxels_for([f.stamp_ns for f in span])
            known = [i for i, v in enumerate(voxels) if v is not None]
            if known:
                sets = [voxels[i] for i in known]
                picked = [j for j, i in enumerate(known) if i in set(positions)]
                # markers on a ~8 cm grid: the 2 cm base grid would be 60x the points for RViz
                factor = max(1, int(round(COVERAGE_VOXEL_M / float(sets[0].base_voxel))))
                self._coverage_pub.publish(coverage_markers(sets, picked, world_frame, stamp_ns, factor=factor))
        poses = np.stack([f.world_from_camera if f.world_from_camera is not None else np.full((4, 4), np.nan)
                          for f in span]) if span else np.zeros((0, 4, 4))
        if np.isfinite(poses.reshape(len(poses), -1)).all(axis=1).sum() >= 2:
            self._trajectory_pub.publish(trajectory_markers(poses, positions, world_frame, stamp_ns))

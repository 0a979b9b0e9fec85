"""GeometryWorker: per-frame voxel sets from sensor depth+pose or model heads, cached and evicted.

The chaining test uses ``GroundTruthGeometry``: a geometry source that answers predict_geometry
with the synthetic renderer's exact depth and poses (relative to the batch's first frame, with a
different scale per batch, as VGGT does). It checks the worker's anchoring arithmetic against
known poses, which a random-weight model cannot; the real tiny model is exercised separately.
"""
import threading
import time

import numpy as np
import pytest

from ros2_spatial_mllm.bag import synthetic
from ros2_spatial_mllm.buffer import Frame, FrameBuffer
from ros2_spatial_mllm.geometry_worker import GeometryWorker, unproject_depth
from ros2_spatial_mllm.sampling import FrameVoxels, space_aware_sample

S = 10**9
HW = (48, 64)
SCENE = synthetic.default_scene()
K = synthetic.intrinsics_for(HW[1], HW[0])


@pytest.fixture(scope="module")
def rendered():
    poses = synthetic.orbit_poses(8)
    return [(pose, *synthetic.render(SCENE, pose, K, HW)) for pose in poses]


def sensor_frame(i, item):
    pose, rgb, depth = item
    return Frame(i * S, "cam", rgb, depth, K, pose)


def test_unproject_depth_recovers_rendered_box_geometry(rendered):
    pose, _, depth = rendered[0]
    points = unproject_depth(depth, K, pose, max_side=64)
    finite = points[np.isfinite(points).all(-1)]
    assert finite.shape[0] == HW[0] * HW[1]
    assert finite[:, 2].min() > -1e-3                 # nothing below the floor
    assert finite[:, :2].max() <= SCENE.room_m / 2 + 1e-3
    bad = depth.copy()
    bad[0, 0] = np.nan
    assert np.isnan(unproject_depth(bad, K, pose)[0, 0]).all()


def test_sensor_frames_get_voxels_off_the_caller_thread_and_leave_with_eviction(rendered):
    buf = FrameBuffer(max_frames=5)
    worker = GeometryWorker(buf)
    callers = []
    worker.build_voxels = lambda pts, conf: (callers.append(threading.current_thread().name),
                                             FrameVoxels.from_points(pts, conf, conf_percentile=None))[1]
    for i, item in enumerate(rendered):
        buf.add(sensor_frame(i, item))
    assert worker.wait_idle(10)
    worker.stop()
    stamps = buf.stamps()
    voxels = worker.voxels_for(stamps)
    assert all(v is not None and not v.empty for v in voxels)
    assert set(callers) == {"geometry-worker"}
    assert worker.voxels_for([0, 1 * S]) == [None, None]          # evicted with the buffer
    stats = worker.stats()
    assert stats["sensor"] + stats["dropped_evicted"] == 8 and stats["cached"] == 5
    result = space_aware_sample(voxels, 3)
    assert len(result.indices) == 3 and 0 < result.coverage <= 1


def test_queue_full_drops_oldest_pending_and_counts(rendered):
    buf = FrameBuffer(max_frames=50)
    worker = GeometryWorker(buf, queue_size=2, autostart=False)
    for i, item in enumerate(rendered[:5]):
        buf.add(sensor_frame(i, item))
    assert worker.stats()["dropped_queue_full"] == 3 and worker.stats()["pending"] == 2
    worker.start()
    assert worker.wait_idle(10)
    worker.stop()
    assert worker.voxels_for([3 * S, 4 * S])[0] is not None and worker.voxels_for([0])[0] is None


class GroundTruthGeometry:
    """predict_geometry from the renderer: exact depth and poses, world = first frame, scale s."""

    def __init__(self, items, camera_source="camera_head"):
        self.by_image = {item[1].tobytes(): item for item in items}
        self.index = {item[1].tobytes(): i for i, item in enumerate(items)}
        self.camera_source = camera_source
        self.calls = 0
        self.batches = []                               # rendered indices of each call's frames

    def predict_geometry(self, frames):
        self.calls += 1
        self.batches.append([self.index[f.tobytes()] for f in frames])
        scale = 0.5 + 0.37 * self.calls                 # a different scale every batch
        items = [self.by_image[f.tobytes()] for f in frames]
        first_from_world = np.linalg.inv(items[0][0])
        extrinsics = []
        for pose, _, _ in items:
            cam_from_first = np.linalg.inv(first_from_world @ pose)
            cam_from_first[:3, 3] *= scale
            extrinsics.append(cam_from_first[:3])
        depth = np.stack([d for _, _, d in items]) * scale
        return {"depth": depth.astype(np.float32), "depth_conf": np.full(depth.shape, 2.0, np.float32),
                "extrinsics": np.stack(extrinsics).astype(np.float32), "intrinsics": np.stack([K] * len(items))}


def test_model_chunks_share_one_world_frame_and_scale_across_reanchoring(rendered):
    buf = FrameBuffer(max_frames=4)                     # the reference gets evicted -> re-anchor
    oracle = GroundTruthGeometry(rendered)
    worker = GeometryWorker(buf, model_provider=lambda: oracle, chunk_size=3, autostart=False)
    estimates = {}
    for i, (pose, rgb, _) in enumerate(rendered):
        buf.add(Frame(i * S, "cam", rgb))              # rgb only: model-head path
        worker.start()
        assert worker.wait_idle(10)
        worker.stop()
        for stamp in buf.stamps():
            entry = worker.entry(stamp)
            if entry is not None:
                estimates[stamp // S] = entry.world_from_camera
    stats = worker.stats()
    assert stats["model"] == 8 and stats["reanchored"] >= 1 and oracle.calls >= 4
    first_from_world = np.linalg.inv(rendered[0][0])
    scale0 = 0.5 + 0.37                                 # world scale = the first batch's
    for i, est in estimates.items():
        truth = first_from_world @ rendered[i][0]
        np.testing.assert_allclose(est[:3, :3], truth[:3, :3], atol=1e-4)
        np.testing.assert_allclose(est[:3, 3], truth[:3, 3] * scale0, atol=1e-3)


@pytest.mark.parametrize("camera_source", ["camera_head", "pair_pose"])
def test_pair_pose_models_anchor_each_chunk_on_the_newest_frame(rendered, camera_source):
    """A camera head relates every frame of a chunk to its first directly, so the reference
    keyframe stays while buffered; a pair-pose head chains consecutive steps, so each chunk must
    start from the newest frame that already has geometry. Poses stay exact either way."""
    buf = FrameBuffer(max_frames=16)                    # nothing is evicted
    oracle = GroundTruthGeometry(rendered, camera_source)
    worker = GeometryWorker(buf, model_provider=lambda: oracle, chunk_size=3, autostart=False)
    for i, (_, rgb, _) in enumerate(rendered):
        buf.add(Frame(i * S, "cam", rgb))
        worker.start()
        assert worker.wait_idle(10)
        worker.stop()
    later = oracle.batches[1:]
    assert later and all(len(batch) == 2 for batch in later)
    if camera_source == "pair_pose":
        assert all(batch[0] == batch[1] - 1 for batch in later), oracle.batches
    else:
        assert all(batch[0] == 0 for batch in later), oracle.batches
    first_from_world = np.linalg.inv(rendered[0][0])
    for i in range(len(rendered)):
        est, truth = worker.entry(i * S).world_from_camera, first_from_world @ rendered[i][0]
        np.testing.assert_allclose(est[:3, :3], truth[:3, :3], atol=1e-4)
        np.testing.assert_allclose(est[:3, 3], truth[:3, 3] * (0.5 + 0.37), atol=1e-3)


def test_model_path_waits_for_model_and_uses_the_real_tiny_model(rendered):
    from ros2_spatial_mllm.inference import SpatialMLLM
    buf = FrameBuffer(max_frames=10)
    holder = {"model": None}
    lock = threading.RLock()
    worker = GeometryWorker(buf, model_provider=lambda: holder["model"], model_lock=lock, chunk_size=4)
    for i, (_, rgb, _) in enumerate(rendered[:6]):
        buf.add(Frame(i * S, "cam", rgb))
    assert worker.wait_idle(1) and worker.stats()["pending"] == 6 and worker.stats()["model"] == 0
    holder["model"] = SpatialMLLM.load()
    worker.notify_model_ready()
    assert worker.wait_idle(60)
    worker.stop()
    voxels = worker.voxels_for(buf.stamps())
    assert all(isinstance(v, FrameVoxels) for v in voxels)
    assert worker.stats()["model"] == 6 and worker.stats()["errors"] == 0
    holder["model"].close()


def test_sensor_data_arriving_after_the_image_is_picked_up_by_lookup(rendered):
    buf = FrameBuffer(max_frames=10)
    late = {}                                           # stamp -> (depth, K, pose), filled later
    worker = GeometryWorker(buf, use_model=False, sensor_wait_s=3.0,   # >> the 0.1 s gap, even when loaded
                            sensor_lookup=lambda f: late.get(f.stamp_ns))
    for i, (pose, rgb, depth) in enumerate(rendered[:4]):
        buf.add(Frame(i * S, "cam", rgb))              # image first, no depth/pose yet
    time.sleep(0.1)
    for i, (pose, _, depth) in enumerate(rendered[:3]):
        late[i * S] = (depth, K, pose)                  # frame 3's depth never arrives
    assert worker.wait_idle(30)
    worker.stop()
    stats = worker.stats()
    assert stats["sensor"] == 3 and stats["skipped_no_source"] == 1
    assert worker.voxels_for([0, S, 2 * S, 3 * S])[3] is None
    assert all(f.depth is None for f in buf.window())   # frames in the buffer are not modified
    np.testing.assert_allclose(worker.entry(2 * S).world_from_camera, rendered[2][0], atol=1e-6)


@pytest.fixture(scope="module")
def orbit128():
    """128 sensor frames (rgb, depth, pose) around the synthetic room: the space-aware case 16 of 128."""
    return [(pose, *synthetic.render(SCENE, pose, K, HW)) for pose in synthetic.orbit_poses(128)]


def test_voxel_index_picks_equal_the_stateless_sampler_on_the_same_frames(orbit128):
    from ros2_spatial_mllm.query_engine import select_frames
    buf = FrameBuffer(max_frames=200)
    worker = GeometryWorker(buf, use_model=False, queue_size=200)
    frames = [sensor_frame(i + 1, item) for i, item in enumerate(orbit128)]
    for frame in frames:
        buf.add(frame)
    assert worker.wait_idle(30)
    worker.stop()
    stamps = buf.stamps()
    assert len(stamps) == 128 and worker.indexed_stamps() == stamps
    cases = [(stamps, 16), (stamps, 4), (stamps[10:70], 8), (stamps[::3], 16), (stamps[5:9], 16)]
    for keys, k in cases:
        fast = worker.select_space_aware(keys, k)
        slow = space_aware_sample(worker.voxels_for(keys), k, timestamps=[s * 1e-9 for s in keys])
        assert fast is not None
        assert fast.indices == slow.indices and fast.pick_order == slow.pick_order, (len(keys), k)
        assert fast.gains == slow.gains and fast.coverage == pytest.approx(slow.coverage, abs=0)
        assert fast.voxel_size == pytest.approx(slow.voxel_size)
    assert worker.stats()["index_selects"] == len(cases)
    # through the engine's selection: the index path and the stateless path agree
    voxel_sets = worker.voxels_for(stamps)
    with_index = select_frames(frames, 16, "space_aware", voxel_sets, 128, worker.select_space_aware)
    stateless = select_frames(frames, 16, "space_aware", voxel_sets, 128)
    assert with_index == stateless and with_index[2] == "space_aware" and len(with_index[0]) == 16
    assert worker.stats()["index_selects"] == len(cases) + 1


def test_voxel_index_follows_buffer_eviction_and_clear(rendered):
    buf = FrameBuffer(max_frames=5)
    worker = GeometryWorker(buf, use_model=False)
    for i, item in enumerate(rendered):
        buf.add(sensor_frame(i, item))
    assert worker.wait_idle(10)
    assert worker.indexed_stamps() == buf.stamps() == [i * S for i in range(3, 8)]
    assert worker.stats()["indexed"] == 5
    assert worker.select_space_aware([2 * S, 3 * S], 1) is None     # 2 s was evicted
    assert worker.stats()["index_misses"] == 1
    result = worker.select_space_aware(buf.stamps(), 2)
    assert len(result.indices) == 2 and 0 < result.coverage <= 1
    buf.clear()
    assert worker.indexed_stamps() == [] and worker.stats()["indexed"] == 0
    assert worker.select_space_aware([5 * S], 1) is None
    buf.add(sensor_frame(20, rendered[0]))                           # indexing resumes after a clear
    assert worker.wait_idle(10)
    worker.stop()
    assert worker.indexed_stamps() == [20 * S]


def test_non_framevoxels_sets_are_not_indexed_and_selection_falls_back(rendered):
    from ros2_spatial_mllm.query_engine import select_frames
    buf = FrameBuffer(max_frames=10)
    worker = GeometryWorker(buf, use_model=False,
                            build_voxels=lambda pts, conf: np.unique(np.floor(pts[np.isfinite(pts).all(-1)] / 0.5)
                                                                     .astype(np.int64) @ [1, 1000, 10**6]))
    frames = [sensor_frame(i, item) for i, item in enumerate(rendered)]
    for frame in frames:
        buf.add(frame)
    assert worker.wait_idle(10)
    worker.stop()
    assert worker.stats()["index_rejected"] == 8 and worker.indexed_stamps() == []
    voxel_sets = worker.voxels_for(buf.stamps())
    chosen, coverage, used = select_frames(frames, 3, "space_aware", voxel_sets, 128, worker.select_space_aware)
    expected = space_aware_sample(voxel_sets, 3, timestamps=[f.stamp_ns * 1e-9 for f in frames])
    assert used == "space_aware" and chosen == expected.indices and coverage == expected.coverage

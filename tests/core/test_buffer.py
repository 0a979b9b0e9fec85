"""FrameBuffer: count/byte bounds, keyframe decimation, counters, time jumps, listeners, threads."""
import threading

import numpy as np
import pytest

from ros2_spatial_mllm.buffer import DROP_REASONS, Frame, FrameBuffer, pose_delta

S = 10**9  # ns per second


def frame(t_s: float, hw=(4, 6), pose=None, depth=False) -> Frame:
    rgb = np.zeros(hw + (3,), np.uint8)
    return Frame(int(round(t_s * S)), "cam", rgb, np.ones(hw, np.float32) if depth else None, None, pose)


def pose_at(x=0.0, yaw_deg=0.0) -> np.ndarray:
    a = np.radians(yaw_deg)
    T = np.eye(4)
    T[:3, :3] = [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]
    T[0, 3] = x
    return T


def test_count_bound_evicts_oldest_and_counts():
    buf = FrameBuffer(max_frames=3)
    for i in range(5):
        assert buf.add(frame(i)).kept
    assert buf.stamps() == [2 * S, 3 * S, 4 * S]
    st = buf.stats()
    assert st["received"] == 5 and st["kept"] == 5 and st["dropped"]["evicted"] == 2
    assert st["rejected_total"] == 0 and st["fill"] == 1.0 and st["span_s"] == pytest.approx(2.0)


def test_byte_bound_evicts_until_under_budget_and_rejects_oversized():
    one = frame(0).nbytes                       # 72 bytes of rgb
    buf = FrameBuffer(max_frames=100, max_bytes=int(2.5 * one))
    for i in range(4):
        buf.add(frame(i))
    assert len(buf) == 2 and buf.stats()["bytes"] == 2 * one
    big = frame(10, hw=(40, 40))
    outcome = buf.add(big)
    assert not outcome.kept and outcome.reason == "too_large" and len(buf) == 2
    with_depth = frame(11, depth=True)
    assert with_depth.nbytes == one + 4 * 6 * 4


def test_time_decimation_keeps_frames_at_min_interval():
    buf = FrameBuffer(min_interval_s=0.25)
    kept = [buf.add(frame(i * 0.1)).kept for i in range(11)]   # 10 Hz in, 0.25 s min interval
    assert kept == [True, False, False, True, False, False, True, False, False, True, False]
    assert buf.stats()["dropped"]["decimated"] == 7


def test_motion_decimation_uses_translation_rotation_and_max_interval():
    buf = FrameBuffer(min_interval_s=0.0, min_translation_m=0.5, min_rotation_deg=20, max_interval_s=2.0)
    assert buf.add(frame(0.0, pose=pose_at(0.0))).kept
    assert not buf.add(frame(0.5, pose=pose_at(0.2))).kept             # moved 0.2 m, turned 0
    assert buf.add(frame(1.0, pose=pose_at(0.6))).kept                 # moved 0.6 m
    assert buf.add(frame(1.2, pose=pose_at(0.6, yaw_deg=25))).kept     # turned 25 deg
    assert not buf.add(frame(1.5, pose=pose_at(0.6, yaw_deg=30))).kept
    assert buf.add(frame(3.3, pose=pose_at(0.6, yaw_deg=25))).kept     # still, but 2.1 s passed
    assert buf.add(frame(3.4)).kept                                    # no pose: time rule only
    assert buf.stats()["dropped"]["decimated"] == 2


def test_pose_delta_measures_translation_and_angle():
    moved, turned = pose_delta(pose_at(1.0, 10), pose_at(4.0, 100))
    assert moved == pytest.approx(3.0) and turned == pytest.approx(90.0)


def test_out_of_order_and_duplicate_stamps_are_dropped():
    buf = FrameBuffer(time_jump_threshold_s=1.0)
    buf.add(frame(5.0))
    assert buf.add(frame(5.0)).reason == "out_of_order"
    assert buf.add(frame(4.5)).reason == "out_of_order"
    assert buf.stamps() == [5 * S] and buf.stats()["dropped"]["out_of_order"] == 2


def test_time_jump_reset_clears_and_restarts_timeline():
    evicted = []
    buf = FrameBuffer(on_time_jump="reset")
    buf.add_listener(on_evict=evicted.append)
    for t in (100, 101, 102):
        buf.add(frame(t))
    outcome = buf.add(frame(3.0))                  # bag loop: back by ~99 s
    assert outcome.kept and outcome.reason == "kept_after_reset"
    assert buf.stamps() == [3 * S] and len(evicted) == 3
    st = buf.stats()
    assert st["time_jumps"] == 1 and st["dropped"]["time_jump_cleared"] == 3
    assert buf.add(frame(4.0)).kept


def test_time_jump_drop_policy_keeps_old_timeline():
    buf = FrameBuffer(on_time_jump="drop")
    buf.add(frame(100))
    assert buf.add(frame(3.0)).reason == "time_jump"
    assert buf.add(frame(50.0)).reason == "time_jump"
    assert buf.add(frame(101)).kept
    assert buf.stats()["dropped"]["time_jump"] == 2 and buf.stats()["time_jumps"] == 0


def test_window_is_inclusive_and_unbounded_by_default():
    buf = FrameBuffer()
    for t in range(10):
        buf.add(frame(t))
    assert [f.stamp_ns // S for f in buf.window(3 * S, 5 * S)] == [3, 4, 5]
    assert len(buf.window()) == 10 and len(buf.window(None, 2 * S)) == 3
    assert buf.window(20 * S, 30 * S) == []
    assert buf.get(4 * S).stamp_ns == 4 * S and buf.get(4 * S + 1) is None and (7 * S) in buf


def test_invalid_frames_and_decode_errors_are_counted_not_raised():
    buf = FrameBuffer()
    assert buf.add(Frame(1, "cam", np.zeros((4, 4), np.uint8))).reason == "invalid"
    assert buf.add(Frame(2, "cam", np.zeros((4, 4, 3), np.float32))).reason == "invalid"
    buf.count_drop("decode_error")
    st = buf.stats()
    assert st["received"] == 3 and st["kept"] == 0 and st["dropped"]["decode_error"] == 1
    assert st["rejected_total"] == 3 and set(st["dropped"]) == set(DROP_REASONS)
    with pytest.raises(ValueError):
        buf.count_drop("nonsense")


def test_listeners_see_kept_and_evicted_frames():
    kept, gone = [], []
    buf = FrameBuffer(max_frames=2, min_interval_s=0.5)
    buf.add_listener(on_keep=lambda f: kept.append(f.stamp_ns), on_evict=lambda f: gone.append(f.stamp_ns))
    for t in (0, 0.1, 1, 2, 3):
        buf.add(frame(t))
    assert kept == [0, 1 * S, 2 * S, 3 * S] and gone == [0, 1 * S]
    buf.clear()
    assert gone == [0, 1 * S, 2 * S, 3 * S] and len(buf) == 0


def test_bad_configuration_is_rejected():
    with pytest.raises(ValueError):
        FrameBuffer(max_frames=0)
    with pytest.raises(ValueError):
        FrameBuffer(min_interval_s=-1)
    with pytest.raises(ValueError):
        FrameBuffer(on_time_jump="ignore")


def test_concurrent_add_and_window_stay_consistent():
    buf = FrameBuffer(max_frames=50)
    errors = []

    def writer(offset):
        for i in range(500):
            buf.add(frame(offset + i * 4e-3))

    def reader():
        for _ in range(300):
            window = buf.window()
            stamps = [f.stamp_ns for f in window]
            if stamps != sorted(stamps) or len(stamps) > 50:
                errors.append(stamps)

    threads = [threading.Thread(target=writer, args=(0,)), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    st = buf.stats()
    assert not errors and st["received"] == 500 and len(buf) == 50
    assert st["kept"] - st["dropped"]["evicted"] == 50 and st["input_rate_hz"] > 0


def test_core_modules_import_without_rclpy():
    import subprocess
    import sys
    code = ("import sys; import ros2_spatial_mllm.buffer, ros2_spatial_mllm.image_codec, "
            "ros2_spatial_mllm.query_engine, ros2_spatial_mllm.geometry_worker, ros2_spatial_mllm.bag.io, "
            "ros2_spatial_mllm.bag.cli; assert 'rclpy' not in sys.modules, 'rclpy imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr

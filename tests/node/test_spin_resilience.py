"""The node's spin loop survives an exception raised inside a callback (rclpy re-raises it out of
`executor.spin()`, which used to end the node's serving while its process stayed up).

Real rclpy: a private Context, a MultiThreadedExecutor, a timer whose first call raises.
"""
from __future__ import annotations

import threading
import time


def test_spin_survives_a_raising_callback_and_counts_it():
    import rclpy
    from rclpy.executors import MultiThreadedExecutor

    from ros2_spatial_mllm.ros.process import CallbackErrors, spin_until_shutdown

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("spin_resilience_probe", context=context)
    executor = MultiThreadedExecutor(num_threads=2, context=context)
    executor.add_node(node)
    calls = []

    def tick() -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("boom in a callback")

    node.create_timer(0.02, tick)
    errors = CallbackErrors()
    running = threading.Event()
    running.set()
    thread = threading.Thread(target=spin_until_shutdown,
                              args=(executor, node.get_logger(), errors, running.is_set), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10.0
        while len(calls) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(calls) >= 5, calls                  # the timer kept firing after the exception
        assert errors.count == 1 and errors.last == "RuntimeError: boom in a callback"
    finally:
        running.clear()
        executor.shutdown(timeout_sec=2.0)
        thread.join(timeout=5.0)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    assert not thread.is_alive()                       # executor shutdown ends the loop


def test_stack_dump_signal_is_registered():
    import faulthandler
    import signal

    from ros2_spatial_mllm.ros.process import enable_stack_dumps
    try:
        assert enable_stack_dumps() is True
        # registered: unregister reports that a handler was installed
        assert faulthandler.unregister(signal.SIGUSR1) is True
    finally:
        faulthandler.unregister(signal.SIGUSR1)

"""Process-level settings of the node executable: heap, stack dumps, the spin loop (rclpy is
imported only inside `spin_until_shutdown`)."""
from __future__ import annotations


def limit_heap_growth() -> None:
    """glibc only: serve allocations >= 1 MiB (every camera frame) with mmap, so freed frames go
    back to the OS at once. Without it the 10-minute 1080p soak grew ~6.7 MiB/min from heap
    fragmentation; with it ~0.4 MiB/min (docs/reliability.md). No-op elsewhere."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD = -3
    except (OSError, AttributeError):
        pass


def enable_stack_dumps() -> bool:
    """`kill -USR1 <pid>` writes every thread's Python stack to stderr (the node's log): the
    first thing to look at when a node stops answering. Returns False where SIGUSR1 is absent."""
    import faulthandler
    import signal
    if not hasattr(signal, "SIGUSR1"):
        return False
    faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)
    return True


class CallbackErrors:
    """Counts exceptions that escaped a callback into the executor (rclpy re-raises them out of
    `spin`, which would end the process); the node logs each and keeps spinning."""

    def __init__(self) -> None:
        self.count = 0
        self.last = ""


def spin_until_shutdown(executor, logger, errors: CallbackErrors, is_running) -> None:
    """`executor.spin()` that survives an exception raised by any callback (ours or rclpy's own,
    e.g. an action client that vanished mid-goal): one error line per exception, then spin on.
    KeyboardInterrupt and rclpy's ExternalShutdownException end it; so does `is_running()`
    turning False."""
    import traceback

    from rclpy.executors import ExternalShutdownException
    while is_running():
        try:
            executor.spin()
            return                                   # executor shut down or context invalid
        except (KeyboardInterrupt, ExternalShutdownException):
            raise
        except Exception as exc:  # noqa: BLE001 - a callback's bug must not stop the node
            errors.count += 1
            errors.last = f"{type(exc).__name__}: {exc}"
            where = traceback.extract_tb(exc.__traceback__)
            site = f" at {where[-1].filename.rsplit('/', 1)[-1]}:{where[-1].lineno}" if where else ""
            logger.error(f"callback raised {errors.last}{site}; still serving "
                         f"({errors.count} callback errors so far)")

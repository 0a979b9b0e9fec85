"""A real CUDA out-of-memory (not an injected one): the query engine retries with half the frames
and answers. The GPU's memory is capped with torch's per-process fraction halfway between what
8 and 64 frames reserve, so the tiny model runs out of memory the way a big model does on a small
GPU. Reserved (not allocated) bytes, since the cap counts the allocator's reserve.

The peaks are measured through the engine, on its own query thread: a thread's first matrix
product allocates its cuBLAS workspace (32 MiB on Hopper) from the same capped allocator. A first
version measured them on the test's thread; on an H200 every retry then failed at exactly that
32 MiB allocation, down to 2 frames."""
import re

import numpy as np
import pytest
import torch

from ros2_spatial_mllm.buffer import Frame, FrameBuffer
from ros2_spatial_mllm.query_engine import EngineConfig, ErrorCode, QueryEngine, QueryRequest

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="needs a CUDA GPU (a real device out-of-memory)")]

QUESTION = "How many chairs are in the room?"


def _ask(engine, num_frames):
    return engine.ask(QueryRequest(QUESTION, sampling="uniform", num_frames=num_frames, max_new_tokens=2))


def _peak_reserved(engine, num_frames) -> int:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    out = _ask(engine, num_frames)
    assert out.code == ErrorCode.OK and len(out.frame_stamps_ns) == num_frames, out.message
    torch.cuda.synchronize()
    return torch.cuda.max_memory_reserved()


def test_real_cuda_out_of_memory_is_retried_with_fewer_frames():
    from ros2_spatial_mllm.inference import SpatialMLLM

    rng = np.random.default_rng(0)
    buf = FrameBuffer(max_frames=64)
    for i in range(64):
        buf.add(Frame((i + 1) * 10**9, "cam", rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)))
    engine = QueryEngine(buf, EngineConfig(num_frames=64, timeout_s=120.0))
    engine.attach_model(SpatialMLLM.load(device="cuda", dtype="float32"))
    try:
        p8, p64 = _peak_reserved(engine, 8), _peak_reserved(engine, 64)
        assert p64 > p8, (p8, p64)
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction((p8 + (p64 - p8) // 2) / total)
        out = _ask(engine, 64)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        engine.shutdown(close_model=True)
    assert out.code == ErrorCode.OK, (p8, p64, out.message)
    used = re.search(r"answered from (\d+) of 64 frames", out.message)   # 64 really ran out
    assert used and int(used.group(1)) in (8, 16, 32), (p8, p64, out.message)
    assert len(out.frame_stamps_ns) == int(used.group(1))

"""TensorRT builder/runtime: pure-Python parts on CPU; real builds skipped without TensorRT+CUDA."""
import copy
import importlib.util

import numpy as np
import pytest
import torch

from engines.profiles import OptimizationProfile, TensorShapeRange, frame_count_profiles
from engines.trt_builder import (BuildOptions, CalibrationFeeder, TensorRTUnavailableError,
                                 check_profiles_against_inputs, onnx_inputs_and_types,
                                 plan_precision, require_tensorrt)
from engines.trt_runtime import TRT_TO_TORCH_DTYPE, torch_dtype_for

HAS_TRT_GPU = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()
needs_trt = pytest.mark.skipif(not HAS_TRT_GPU, reason="needs TensorRT + CUDA GPU")

HW = (28, 56, 56)


def test_tensorrt_missing_error_names_tensorrt_and_cuda():
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    with pytest.raises(TensorRTUnavailableError, match="needs TensorRT \\+ CUDA GPU"):
        require_tensorrt()


@pytest.mark.parametrize("precision,flags,typed,calib", [
    ("fp32", (), False, False), ("fp16", ("FP16",), False, False),
    ("bf16", ("BF16",), False, False), ("int8", ("INT8", "FP16"), False, True)])
def test_precision_plan_tensorrt10(precision, flags, typed, calib):
    plan = plan_precision(precision, weak_typing=True, has_calibration=True,
                          onnx_float_types={"float"}, onnx_has_qdq=False)
    assert (plan.builder_flags, plan.strongly_typed, plan.use_calibrator) == (flags, typed, calib)


def test_precision_plan_errors_say_what_to_do():
    with pytest.raises(ValueError, match="calibration frames"):
        plan_precision("int8", True, False, {"float"}, False)
    with pytest.raises(ValueError, match="Q/DQ"):
        plan_precision("fp8", True, True, {"float"}, False)
    with pytest.raises(ValueError, match="--dtype fp16"):  # TensorRT 11 needs an fp16 ONNX
        plan_precision("fp16", False, False, {"float"}, False)
    with pytest.raises(ValueError, match="Q/DQ"):
        plan_precision("int8", False, True, {"float"}, False)
    with pytest.raises(ValueError, match="precision must be"):
        plan_precision("int4", True, False, {"float"}, False)


def test_precision_plan_tensorrt11_and_qdq():
    plan = plan_precision("bf16", False, False, {"bfloat16", "float"}, False)
    assert plan.strongly_typed and plan.builder_flags == ()
    qdq10 = plan_precision("int8", True, False, {"float"}, True)
    assert qdq10.builder_flags == ("INT8", "FP16") and not qdq10.use_calibrator
    assert plan_precision("fp8", False, False, {"float"}, True).strongly_typed


def _tiny_onnx(path):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(3, 4)

        def forward(self, images):  # [B, S, 3, H, W] -> [B, S, 4]
            return self.proj(images.mean(dim=(3, 4)))

    net = Net().eval()
    torch.onnx.export(net, (torch.rand(1, 2, 3, 28, 28),), str(path), dynamo=False,
                      input_names=["images"], output_names=["feat"],
                      dynamic_axes={"images": {1: "frames", 3: "height", 4: "width"}})
    return path, net


def test_onnx_inputs_and_profile_checks(tmp_path):
    path, _ = _tiny_onnx(tmp_path / "net.onnx")
    inputs, float_types, has_qdq = onnx_inputs_and_types(path)
    assert inputs == {"images": (1, -1, 3, -1, -1)}
    assert float_types == {"float"} and not has_qdq
    good = frame_count_profiles("images", [(1, 2, 8), (8, 16, 32)], HW, HW)
    check_profiles_against_inputs(inputs, good)
    with pytest.raises(ValueError, match="axis 0 is fixed at 1"):
        check_profiles_against_inputs(inputs, frame_count_profiles("images", [(1, 2, 8)], HW, HW,
                                                                   batch=2))
    with pytest.raises(ValueError, match="no range for dynamic input 'images'"):
        check_profiles_against_inputs(inputs, [OptimizationProfile(())])
    with pytest.raises(ValueError, match="rank"):
        check_profiles_against_inputs(inputs, [OptimizationProfile(
            (TensorShapeRange("images", (1, 1), (1, 2), (1, 4)),))])
    with pytest.raises(ValueError, match="give at least one optimisation profile"):
        check_profiles_against_inputs(inputs, [])


def test_calibration_feeder_yields_pointers_then_none():
    batches = [{"images": np.full((1, 2, 3, 28, 28), i, np.float32)} for i in range(3)]
    feeder = CalibrationFeeder(batches, device="cpu")
    pointers = [feeder.next_pointers(["images"]) for _ in range(3)]
    assert all(len(p) == 1 and p[0] != 0 for p in pointers)
    assert feeder.next_pointers(["images"]) is None and feeder.count == 3
    with pytest.raises(KeyError, match="lacks inputs"):
        CalibrationFeeder([{"x": np.zeros(1)}], device="cpu").next_pointers(["images"])


def test_trt_dtype_names_map_to_torch():
    assert torch_dtype_for("HALF") is torch.float16 and torch_dtype_for("BF16") is torch.bfloat16
    assert all(isinstance(torch_dtype_for(n), torch.dtype) for n in TRT_TO_TORCH_DTYPE)
    with pytest.raises(TypeError):
        torch_dtype_for("INT4")


@needs_trt
def test_build_and_run_matches_torch(tmp_path):
    from engines.trt_builder import build_engine
    from engines.trt_runtime import TensorRTEngine
    path, net = _tiny_onnx(tmp_path / "net.onnx")
    profiles = frame_count_profiles("images", [(1, 2, 8), (8, 16, 32)], HW, HW)
    plan = build_engine(path, BuildOptions(precision="fp32", profiles=profiles,
                                           timing_cache_path=str(tmp_path / "timing.cache")))
    engine = TensorRTEngine(plan)
    assert len(engine.profiles) == 2
    x = torch.rand(1, 12, 3, 56, 28, device="cuda")
    out = engine(images=x)["feat"]
    assert out.shape == (1, 12, 4) and out.is_cuda
    torch.testing.assert_close(out.cpu(), net(x.cpu()), atol=1e-4, rtol=1e-4)
    assert (tmp_path / "timing.cache").stat().st_size > 0


@needs_trt
@pytest.mark.gpu
def test_tensorrt_backend_matches_torch_on_tiny_export(tiny_model, tiny_onnx_dir, tmp_path):
    """fp32 engines of the tiny export vs the PyTorch backend (float32 thresholds of
    test_export_parity, loosened 10x for TensorRT's TF32 tactics); cache policy end to end."""
    from engines.engine_cache import EngineMissingError
    from ros2_spatial_mllm.backends import get_backend
    model = copy.deepcopy(tiny_model).cuda()  # the exported weights (CUDA init would differ)
    with pytest.raises(EngineMissingError):
        get_backend("tensorrt", model, onnx_dir=tiny_onnx_dir, engine_cache_dir=str(tmp_path),
                    engine_precision="fp32")
    trt_backend = get_backend("tensorrt", model, onnx_dir=tiny_onnx_dir,
                              engine_cache_dir=str(tmp_path), engine_precision="fp32",
                              allow_engine_build=True)
    frames = torch.rand(1, 6, 3, 168, 224, device="cuda")
    ref = get_backend("torch", model).fuse_video(frames)
    torch.testing.assert_close(trt_backend.fuse_video(frames), ref, atol=1e-3, rtol=1e-3)
    # second start: engines come from the cache (allow_build False is enough)
    get_backend("tensorrt", model, onnx_dir=tiny_onnx_dir, engine_cache_dir=str(tmp_path),
                engine_precision="fp32")

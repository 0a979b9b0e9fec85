"""Execute a TensorRT engine on torch CUDA tensors, with no host copies.

    engine = TensorRTEngine.from_file("~/.cache/spatial_mllm/engines/spatial_encoder/<key>.engine")
    out = engine(images=images_cuda)          # dict name -> torch CUDA tensor

Inputs stay where they are (`set_tensor_address(name, tensor.data_ptr())`); outputs are torch
tensors allocated on the same device after the input shapes are set; the engine is enqueued with
`execute_async_v3` on torch's current CUDA stream, so it orders with the surrounding torch work
and nothing synchronises unless the caller does. The optimisation profile is chosen per call with
engines.profiles.select_profile (the closest `opt` shape that fits).
"""
from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any, Optional

from engines.profiles import OptimizationProfile, TensorShapeRange, select_profile
from engines.trt_builder import require_tensorrt

# TensorRT DataType member name -> torch dtype name (resolved lazily so this imports without torch)
TRT_TO_TORCH_DTYPE = {
    "FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT32": "int32",
    "INT64": "int64", "BOOL": "bool", "INT8": "int8", "UINT8": "uint8", "FP8": "float8_e4m3fn",
}


def torch_dtype_for(trt_dtype_name: str) -> Any:
    """torch dtype of a TensorRT DataType name (e.g. 'HALF' -> torch.float16)."""
    import torch

    try:
        return getattr(torch, TRT_TO_TORCH_DTYPE[trt_dtype_name])
    except KeyError:
        raise TypeError(f"TensorRT dtype {trt_dtype_name} has no torch equivalent here") from None


class TensorRTEngine:
    """A deserialized engine + one execution context; call it with CUDA tensors by input name."""

    def __init__(self, engine_bytes: bytes, device: Optional[int] = None):
        import torch

        trt = require_tensorrt()
        if not torch.cuda.is_available():
            from engines.trt_builder import TensorRTUnavailableError
            raise TensorRTUnavailableError("needs TensorRT + CUDA GPU: torch sees no CUDA device")
        self.trt = trt
        self.device = torch.device("cuda", torch.cuda.current_device() if device is None else device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        with torch.cuda.device(self.device):
            self.engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise RuntimeError("TensorRT could not deserialize the engine (built by another "
                               "TensorRT version or for another GPU? rebuild it)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]
        self.dtypes = {n: torch_dtype_for(self.engine.get_tensor_dtype(n).name) for n in names}
        self.profiles = self._read_profiles()
        self._active_profile = 0 if self.profiles else None
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: str | Path, device: Optional[int] = None) -> "TensorRTEngine":
        return cls(Path(path).expanduser().read_bytes(), device)

    def _read_profiles(self) -> list[OptimizationProfile]:
        dynamic = [n for n in self.input_names if -1 in tuple(self.engine.get_tensor_shape(n))]
        profiles = []
        for p in range(self.engine.num_optimization_profiles if dynamic else 0):
            ranges = []
            for n in dynamic:
                lo, mid, hi = self.engine.get_tensor_profile_shape(n, p)
                ranges.append(TensorShapeRange(n, tuple(lo), tuple(mid), tuple(hi)))
            profiles.append(OptimizationProfile(tuple(ranges)))
        return profiles

    def __call__(self, **inputs: Any) -> dict[str, Any]:
        """Run the engine. inputs: name -> CUDA tensor (dtype of the engine input)."""
        import torch

        missing = set(self.input_names) - set(inputs)
        if missing:
            raise KeyError(f"engine inputs missing: {sorted(missing)}")
        for name, t in inputs.items():
            if name not in self.dtypes:
                raise KeyError(f"engine has no input '{name}' (inputs: {self.input_names})")
            if t.device != self.device:
                raise ValueError(f"input '{name}' is on {t.device}, engine on {self.device}")
            if t.dtype != self.dtypes[name]:
                raise TypeError(f"input '{name}' is {t.dtype}, engine expects {self.dtypes[name]}")
        stream = torch.cuda.current_stream(self.device)
        with self._lock:
            if self.profiles:
                shapes = {n: tuple(inputs[n].shape) for n in self.profiles[0].input_names}
                index = select_profile(self.profiles, shapes)
                if index != self._active_profile:
                    self.context.set_optimization_profile_async(index, stream.cuda_stream)
                    self._active_profile = index
            keep = {}
            for name in self.input_names:
                t = inputs[name].contiguous()
                keep[name] = t
                self.context.set_input_shape(name, tuple(t.shape))
                self.context.set_tensor_address(name, t.data_ptr())
            outputs = {}
            for name in self.output_names:
                shape = tuple(self.context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise RuntimeError(f"output '{name}' has data-dependent shape {shape}; "
                                       "not supported by this runtime")
                # an empty output (e.g. pair_pose of a one-frame chunk: [1, 0, 6]) still needs a
                # non-null address, so it views a one-element buffer
                numel = math.prod(shape)
                storage = torch.empty(max(1, numel), dtype=self.dtypes[name], device=self.device)
                outputs[name] = storage[:numel].view(shape)
                self.context.set_tensor_address(name, storage.data_ptr())
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed (see the log above)")
            for t in keep.values():  # inputs must outlive the enqueued work
                t.record_stream(stream)
        return outputs

"""ONNX Runtime backend: CPU execution provider, or CUDA EP with I/O binding on torch tensors.

    backend = OnnxRuntimeBackend(model, onnx_dir="engines_out/tiny", device="cpu")

`onnx_dir` is the output of `spatial-mllm-engines export` (export_manifest.json + one .onnx per
component). vision_encoder, spatial_encoder and connector are required; spatial_geometry is
optional (falls back to the PyTorch heads). On CPU, tensors cross as numpy arrays (zero-copy for
contiguous float32 CPU tensors). With the CUDA EP, inputs are bound by device pointer and outputs
are allocated by ONNX Runtime on the GPU (I/O binding); that path is written, not verified here.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .base import EncoderBackend
from .torch_backend import TorchBackend

REQUIRED = ("vision_encoder", "spatial_encoder", "connector")
ORT_TYPES = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16,
             "tensor(bfloat16)": torch.bfloat16}


class OnnxRuntimeBackend(EncoderBackend):
    """Encoders from ONNX files run by ONNX Runtime."""

    name = "onnxruntime"

    def __init__(self, model: Any, onnx_dir: str | Path, device: str = "cpu",
                 intra_op_threads: Optional[int] = None):
        super().__init__(model)
        import onnxruntime as ort

        self.onnx_dir = Path(onnx_dir).expanduser()
        manifest = self.onnx_dir / "export_manifest.json"
        if not manifest.is_file():
            raise FileNotFoundError(f"no export_manifest.json in {self.onnx_dir}; run "
                                    f"`spatial-mllm-engines export --out {self.onnx_dir}` first")
        self.manifest = json.loads(manifest.read_text())
        self.use_cuda = str(device).startswith("cuda")
        providers = ["CPUExecutionProvider"]
        if self.use_cuda:
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeError("onnxruntime has no CUDAExecutionProvider here (needs "
                                   "onnxruntime-gpu and a CUDA GPU); use device=cpu")
            providers.insert(0, ("CUDAExecutionProvider",
                                 {"device_id": torch.device(device).index or 0}))
        options = ort.SessionOptions()
        if intra_op_threads:
            options.intra_op_num_threads = int(intra_op_threads)
        self.sessions = {}
        for component, entry in self.manifest["components"].items():
            self.sessions[component] = ort.InferenceSession(
                str(self.onnx_dir / entry["onnx"]), sess_options=options, providers=providers)
        missing = [c for c in REQUIRED if c not in self.sessions]
        if missing:
            raise FileNotFoundError(f"{self.onnx_dir} lacks exported components {missing}")
        geometry = self.sessions.get("spatial_geometry")
        if (geometry is not None and getattr(model.spatial_encoder.vggt_model, "pair_pose_head", None) is not None
                and "pair_pose" not in [o.name for o in geometry.get_outputs()]):
            # its cameras would silently come from the camera head while camera_source says pair_pose
            raise ValueError(f"{self.onnx_dir}: spatial_geometry was exported without the model's pair_pose "
                             f"output (an export older than the model); run `spatial-mllm-engines export` again")
        self._torch = TorchBackend(model) if "spatial_geometry" not in self.sessions else None

    def _run(self, component: str, x: torch.Tensor) -> list[torch.Tensor]:
        sess = self.sessions[component]
        meta = sess.get_inputs()[0]
        x = x.to(ORT_TYPES.get(meta.type, torch.float32)).contiguous()
        if not self.use_cuda:
            outs = sess.run(None, {meta.name: x.detach().cpu().numpy()})
            return [torch.from_numpy(o) for o in outs]
        return self._run_cuda(sess, meta.name, x)

    def _run_cuda(self, sess: Any, name: str, x: torch.Tensor) -> list[torch.Tensor]:
        x = x.to(self.device)
        binding = sess.io_binding()
        binding.bind_input(name, "cuda", x.device.index or 0, _numpy_dtype(x.dtype),
                           tuple(x.shape), x.data_ptr())
        for out in sess.get_outputs():
            binding.bind_output(out.name, "cuda", x.device.index or 0)
        torch.cuda.current_stream().synchronize()  # ORT runs on its own stream
        sess.run_with_iobinding(binding)
        results = []
        for value in binding.get_outputs():
            if hasattr(value, "to_dlpack"):
                results.append(torch.from_dlpack(value.to_dlpack()))
            else:  # older builds: one device->host->device copy
                results.append(torch.from_numpy(value.numpy()).to(self.device))
        return results

    def vision_encoder(self, frames: torch.Tensor) -> torch.Tensor:
        return self._run("vision_encoder", frames)[0].to(self.device)

    def spatial_encoder(self, frames: torch.Tensor) -> torch.Tensor:
        return self._run("spatial_encoder", frames)[0].to(self.device)

    def spatial_geometry(self, frames: torch.Tensor) -> dict:
        if self._torch is not None:
            return self._torch.spatial_geometry(frames)
        outs = self._run("spatial_geometry", frames)  # pose_enc, depth, depth_conf[, pair_pose]
        names = ("pose_enc", "depth", "depth_conf", "pair_pose")
        return {name: value.to(self.device) for name, value in zip(names, outs)}

    def connector(self, packed_spatial: torch.Tensor) -> torch.Tensor:
        return self._run("connector", packed_spatial)[0].to(self.device)

    def close(self) -> None:
        self.sessions.clear()


def _numpy_dtype(dtype: torch.dtype) -> Any:
    if dtype == torch.bfloat16:
        raise TypeError("ONNX Runtime I/O binding takes no bfloat16 numpy type; export fp16/fp32")
    return {torch.float32: np.float32, torch.float16: np.float16}[dtype]

"""INT8/FP8 Q/DQ export folders: manifest rewrite, calibration plumbing, errors (CPU; the ModelOpt
call itself is replaced by a stand-in that inserts a real Q/DQ pair, so the builder's precision
plan sees what ModelOpt would produce)."""
import importlib.util
import json

import numpy as np
import pytest

from engines.cli import main
from engines.quantize import quantize_export
from engines.trt_builder import make_engine_key, onnx_inputs_and_types, plan_precision
from ros2_spatial_mllm.backends.tensorrt_backend import engine_plan

onnx = pytest.importorskip("onnx")


def qdq_stand_in(calls):
    """Quantizer with ModelOpt's contract: writes output_path with a Q/DQ pair on the input."""
    from onnx import TensorProto, helper

    def quantize(onnx_path, output_path, mode, batches):
        shapes = [{k: v.shape for k, v in b.items()} for b in batches]
        calls.append((mode, shapes))
        model = onnx.load(onnx_path)
        graph = model.graph
        name = graph.input[0].name
        graph.initializer.extend([helper.make_tensor("qdq_scale", TensorProto.FLOAT, [], [0.02])])
        for node in graph.node:  # consumers read the dequantized input
            node.input[:] = [f"{name}_dq" if i == name else i for i in node.input]
        graph.node.insert(0, helper.make_node("DequantizeLinear", [f"{name}_q", "qdq_scale"],
                                              [f"{name}_dq"]))
        graph.node.insert(0, helper.make_node("QuantizeLinear", [name, "qdq_scale"], [f"{name}_q"]))
        onnx.save(model, output_path)
        return output_path

    return quantize


@pytest.fixture()
def calib_dir(tmp_path):
    folder = tmp_path / "calib"
    folder.mkdir()
    for i in range(2):
        np.save(folder / f"b{i}.npy", np.random.rand(1, 2, 3, 56, 84).astype(np.float32))
    return folder


def test_quantized_folder_changes_keys_and_feeds_calibration(tiny_onnx_dir, tmp_path, calib_dir):
    calls = []
    out = tmp_path / "fp8"
    manifest = quantize_export(tiny_onnx_dir, out, "fp8", ["spatial_encoder"],
                               calib_dir=str(calib_dir), quantizer=qdq_stand_in(calls))
    assert calls == [("fp8", [{"images": (1, 2, 3, 56, 84)}] * 2)]
    before = json.loads((tiny_onnx_dir / "export_manifest.json").read_text())["components"]
    after = manifest["components"]
    assert after["spatial_encoder"]["quantized"]["mode"] == "fp8"
    assert after["spatial_encoder"]["onnx_sha256"] != before["spatial_encoder"]["onnx_sha256"]
    assert after["connector"]["onnx_sha256"] == before["connector"]["onnx_sha256"]  # copied
    _, floats, has_qdq = onnx_inputs_and_types(out / after["spatial_encoder"]["onnx"])
    assert has_qdq and plan_precision("fp8", False, False, floats, has_qdq).strongly_typed
    plans = {c: (p, prof) for c, p, prof in engine_plan(out)}
    target = ("10.3.0", ("Orin", "8.7"))
    quant_key = make_engine_key(plans["spatial_encoder"][0], "fp8", plans["spatial_encoder"][1], *target)
    float_key = make_engine_key(tiny_onnx_dir / after["spatial_encoder"]["onnx"], "fp8",
                                plans["spatial_encoder"][1], *target)
    assert quant_key.digest() != float_key.digest()
    assert not onnx_inputs_and_types(out / after["connector"]["onnx"])[2]


def test_quantize_errors_say_what_to_do(tiny_onnx_dir, tmp_path, calib_dir):
    with pytest.raises(ValueError, match="--calib-scenes"):
        quantize_export(tiny_onnx_dir, tmp_path / "a", "int8", ["spatial_encoder"])
    with pytest.raises(ValueError, match="no calibration data for 'connector'"):
        quantize_export(tiny_onnx_dir, tmp_path / "b", "int8", ["connector"], calib_scenes=2)
    with pytest.raises(ValueError, match="must differ"):
        quantize_export(tiny_onnx_dir, tiny_onnx_dir, "int8", ["spatial_encoder"],
                        calib_dir=str(calib_dir))
    with pytest.raises(ValueError, match="not in"):
        quantize_export(tiny_onnx_dir, tmp_path / "c", "fp8", ["llm"], calib_dir=str(calib_dir))
    with pytest.raises(ValueError, match="int8"):
        quantize_export(tiny_onnx_dir, tmp_path / "d", "int4", ["spatial_encoder"])


@pytest.mark.skipif(importlib.util.find_spec("modelopt") is not None, reason="ModelOpt installed")
def test_cli_quantize_without_modelopt_is_one_line(tiny_onnx_dir, tmp_path, calib_dir, capsys):
    code = main(["quantize", "--onnx-dir", str(tiny_onnx_dir), "--out", str(tmp_path / "q"),
                 "--components", "spatial_encoder", "--calib-dir", str(calib_dir)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err and "ModelOpt" in err and "TensorRT" in err

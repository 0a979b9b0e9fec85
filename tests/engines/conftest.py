"""Shared fixtures: the tiny preset and its ONNX export (exported once per test session)."""
import pytest

from engines.export import export_all
from ros2_spatial_mllm.inference import SpatialMLLM


@pytest.fixture(scope="session")
def tiny_model():
    # The shipped tiny weights (not a fresh random init), so exports made from this model match
    # what SpatialMLLM.load() runs, whatever weights the training package ships.
    return SpatialMLLM.load().model


@pytest.fixture(scope="session")
def tiny_onnx_dir(tiny_model, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    out = tmp_path_factory.mktemp("tiny_onnx")
    from ros2_spatial_mllm.model.presets import TINY_ASSETS_DIR
    export_all(tiny_model, out, preset="tiny", model_dir=TINY_ASSETS_DIR)
    return out

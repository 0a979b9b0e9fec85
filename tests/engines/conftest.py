"""Shared fixtures: the tiny preset and its ONNX export (exported once per test session)."""
import pytest

from engines.export import export_all
from engines.model_factory import build_model


@pytest.fixture(scope="session")
def tiny_model():
    return build_model("tiny")


@pytest.fixture(scope="session")
def tiny_onnx_dir(tiny_model, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    out = tmp_path_factory.mktemp("tiny_onnx")
    export_all(tiny_model, out, preset="tiny")
    return out

"""spatial-mllm-engines CLI: export, status (CPU, target given by flags), verify, error lines."""
import json

import pytest

from engines.cli import main
from engines.engine_cache import EngineCache
from engines.trt_builder import make_engine_key
from ros2_spatial_mllm.backends.tensorrt_backend import engine_plan

TARGET = ["--trt-version", "10.3.0", "--gpu-name", "Orin", "--compute-capability", "8.7"]


@pytest.fixture(scope="module")
def connector_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_onnx")
    assert main(["export", "--preset", "tiny", "--out", str(out), "--components", "connector"]) == 0
    return out


def test_status_missing_then_ok_then_corrupt(connector_export, tmp_path, capsys):
    args = ["status", "--onnx-dir", str(connector_export), "--cache-dir", str(tmp_path),
            "--precision", "fp16"] + TARGET
    assert main(args) == 3
    assert json.loads(capsys.readouterr().out)["connector"]["state"] == "missing"
    (component, onnx_path, profiles), = engine_plan(connector_export, require=())
    key = make_engine_key(onnx_path, "fp16", profiles, "10.3.0", ("Orin", "8.7"))
    entry = EngineCache(tmp_path).store(component, key, b"plan-bytes")
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["connector"]["state"].startswith("ok")
    assert main(["verify", str(entry.engine_path)]) == 0
    assert json.loads(capsys.readouterr().out)["key"]["gpu_name"] == "Orin"
    entry.engine_path.write_bytes(b"plan")
    assert main(args) == 3
    assert "truncated" in json.loads(capsys.readouterr().out)["connector"]["state"]
    # another GPU: the cached Orin engine does not count
    assert main(args[:-4] + ["--gpu-name", "NVIDIA H100", "--compute-capability", "9.0"]) == 3


def test_errors_are_one_line(connector_export, tmp_path, capsys):
    assert main(["export", "--out", str(tmp_path), "--frames", "1:2:3"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "even" in err and "Traceback" not in err
    assert main(["verify", str(tmp_path / "none.engine")]) == 1
    assert "engine file not found" in capsys.readouterr().err
    assert main(["status", "--onnx-dir", str(connector_export), "--components", "lm_head"]
                + TARGET) == 1
    assert "unknown components" in capsys.readouterr().err


def test_export_records_the_model_it_came_from(connector_export):
    """`export --preset tiny` exports the embedded tiny checkpoint and records its identity, which
    the node's loader (engine_checks.check_onnx_export) compares with the model it loads."""
    from ros2_spatial_mllm.model.presets import TINY_ASSETS_DIR
    from ros2_spatial_mllm.engine_checks import EngineFileError, check_onnx_export
    from ros2_spatial_mllm.safety import model_identity
    manifest = json.loads((connector_export / "export_manifest.json").read_text())
    identity = model_identity(TINY_ASSETS_DIR)
    assert manifest["model_config_hash"] == identity["config_hash"] != "unknown"
    assert manifest["model_revision"] == identity["revision"] != "unknown"
    check_onnx_export(connector_export, TINY_ASSETS_DIR, required=("connector",))
    other = connector_export.parent / "other_model_export"
    other.mkdir(exist_ok=True)
    (other / "connector").mkdir(exist_ok=True)
    (other / "connector" / "connector.onnx").write_bytes(
        (connector_export / "connector" / "connector.onnx").read_bytes())
    manifest["model_config_hash"] = "0123456789abcdef"
    (other / "export_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EngineFileError, match="another model"):
        check_onnx_export(other, TINY_ASSETS_DIR, required=("connector",))

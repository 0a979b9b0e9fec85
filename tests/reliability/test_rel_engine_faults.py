"""Corrupt or mismatched engine files, through the real node (ONNX Runtime backend on CPU).

Exports (made once per module, in a child process, ~15 s): `good` from the embedded tiny
checkpoint the node loads (its manifest records that model's config hash and revision), `other_weights` from a tiny model with another seed (same config: the
realistic "ONNX of another checkpoint" case) and `other_config` from a tiny model with a wider
LLM (connector/vision outputs 128 instead of 64); `truncated` = `good` with connector.onnx cut in
half. Pinned behaviour:
  * files only: `engine_checks.check_onnx_export` refuses a truncated file, a same-size corrupted file
    (sha256 vs the export manifest), a missing component file and a manifest recording another
    model (`model_config_hash` / `model_revision`), each naming the file; accepts `good`;
  * node: activate with each bad export FAILS with exactly one "activate failed" line naming
    the file or the reason (checkpoint / config mismatch), the node stays alive and `inactive`,
    /diagnostics "model" is ERROR with that reason, queries get MODEL_NOT_READY; cleanup ->
    configure -> activate with `good` then serves OK answers, with backend=onnxruntime and the
    probe figures in /diagnostics. Without TensorRT (this machine) backend=tensorrt fails the
    same clean way; the TensorRT engine-cache checks themselves are in tests/engines.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness import ROOT, STAMPS, Diagnostics, image_messages, publish, ros_env, wait_for
from ros2_spatial_mllm.query_engine import ErrorCode
from ros2_spatial_mllm.engine_checks import EngineFileError, check_onnx_export
from ros2_spatial_mllm.safety import config_hash, model_revision

TINY = ROOT / "ros2_spatial_mllm" / "assets" / "tiny"
ERROR_LEVEL = 2
EXPORT_SCRIPT = r"""
import sys
from engines.export import export_all
from ros2_spatial_mllm.model.checkpoint import load_checkpoint
from ros2_spatial_mllm.model.presets import build_model, tiny_config
out, tiny = sys.argv[1], sys.argv[2]
parts = ["spatial_encoder", "vision_encoder", "connector"]
export_all(load_checkpoint(tiny)[0], out + "/good", components=parts, preset="checkpoint", model_dir=tiny)
export_all(build_model(tiny_config(), seed=1).eval(), out + "/other_weights", components=parts)
wide = tiny_config()
wide.text_config.hidden_size, wide.text_config.intermediate_size = 128, 256
wide.text_config.rope_parameters = {**wide.text_config.rope_parameters, "mrope_section": [4, 6, 6]}
wide.vision_config.out_hidden_size = 128
export_all(build_model(wide, seed=1).eval(), out + "/other_config", components=parts)
"""


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("onnx")
    proc = subprocess.run([sys.executable, "-c", EXPORT_SCRIPT, str(root), str(TINY)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT, env=ros_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    truncated = Path(shutil.copytree(root / "good", root / "truncated"))
    onnx = truncated / "connector" / "connector.onnx"
    onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])      # an interrupted copy
    return {name: root / name for name in ("good", "other_weights", "other_config", "truncated")}


def test_check_onnx_export_names_the_bad_file(exports, tmp_path):
    good = check_onnx_export(exports["good"], TINY)
    assert set(good["components"]) == {"spatial_encoder", "vision_encoder", "connector"}
    assert (good["model_config_hash"], good["model_revision"]) == (config_hash(TINY), model_revision(TINY))
    with pytest.raises(EngineFileError, match=r"connector\.onnx.*not a readable ONNX model"):
        check_onnx_export(exports["truncated"])
    flipped = Path(shutil.copytree(exports["good"], tmp_path / "flipped"))
    onnx = flipped / "connector" / "connector.onnx"       # 4 MB, nearly all raw weight bytes
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF                          # same size, one weight byte differs: parses fine
    onnx.write_bytes(bytes(data))
    with pytest.raises(EngineFileError, match=r"connector\.onnx.*sha256 .* != "):
        check_onnx_export(flipped)
    gone = Path(shutil.copytree(exports["good"], tmp_path / "gone"))
    (gone / "spatial_encoder" / "spatial_encoder.onnx").unlink()
    with pytest.raises(EngineFileError, match=r"spatial_encoder\.onnx' \(spatial_encoder\) is missing"):
        check_onnx_export(gone)
    # a manifest that records its model (what `export --model` can write) must match the loaded one
    recorded = Path(shutil.copytree(exports["good"], tmp_path / "recorded"))
    manifest = json.loads((recorded / "export_manifest.json").read_text())
    manifest.update(model_config_hash=config_hash(TINY), model_revision=model_revision(TINY))
    (recorded / "export_manifest.json").write_text(json.dumps(manifest))
    check_onnx_export(recorded, TINY)
    manifest["model_revision"] = "weights-0123456789abcdef"
    (recorded / "export_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EngineFileError, match=r"made for another model: model_revision weights-0123"):
        check_onnx_export(recorded, TINY)


def _activate_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "activate failed" in line]


def test_node_refuses_corrupt_and_mismatched_engines_then_serves(ros_client, node_factory, exports):
    proc = node_factory("engine_faults", autostart=True, backend="onnxruntime", onnx_dir=str(exports["truncated"]),
                        image_topic=f"/engine_faults_{proc_tag()}/image", num_frames=2, max_new_tokens=2,
                        sampling="latest", geometry_source="none", qos_reliability="reliable", qos_depth=20,
                        diagnostics_period_s=0.2, publish_views=False)
    diag = Diagnostics(ros_client, proc.fqn)
    bad = str(exports["truncated"] / "connector" / "connector.onnx")
    assert wait_for(lambda: diag.get("model", "model_state") == "error", 120.0), proc.post_mortem()
    assert ros_client.state(proc.fqn) == "inactive" and proc.alive()
    lines = _activate_lines(proc.log())
    assert len(lines) == 1 and bad in lines[0] and "not a readable ONNX model" in lines[0], lines
    assert diag.levels["model"] == ERROR_LEVEL and bad in diag.messages["model"]
    assert ros_client.ask(proc.fqn).error_code == ErrorCode.MODEL_NOT_READY

    cases = [("other_weights", "disagrees with the loaded model's weights"),
             ("other_config", "exported for another model config")]
    try:
        import tensorrt  # noqa: F401
    except Exception:  # noqa: BLE001 - CPU machine: the TensorRT backend must fail cleanly too
        cases.append(("tensorrt", "needs TensorRT"))
    for n, (name, reason) in enumerate(cases, start=2):
        params = ({"backend": "tensorrt", "onnx_dir": str(exports["good"])} if name == "tensorrt"
                  else {"onnx_dir": str(exports[name])})
        assert ros_client.set_params(proc.fqn, **params) == [True] * len(params)
        assert ros_client.transition(proc.fqn, "cleanup")
        assert ros_client.transition(proc.fqn, "configure")
        assert ros_client.transition(proc.fqn, "activate") is False
        assert proc.alive() and ros_client.state(proc.fqn) == "inactive"
        lines = _activate_lines(proc.log())
        assert len(lines) == n and reason in lines[-1], lines[-1:]
        assert name == "tensorrt" or str(exports[name]) in lines[-1]
        assert wait_for(lambda: reason in diag.messages.get("model", ""), 10.0), diag.messages
        assert ros_client.ask(proc.fqn).error_code == ErrorCode.MODEL_NOT_READY

    assert ros_client.set_params(proc.fqn, backend="onnxruntime", onnx_dir=str(exports["good"])) == [True, True]
    assert ros_client.transition(proc.fqn, "cleanup")
    assert ros_client.transition(proc.fqn, "configure")
    assert ros_client.transition(proc.fqn, "activate"), proc.post_mortem()
    assert wait_for(lambda: diag.get("model", "model_state") == "ready", 10.0)
    assert diag.get("model", "backend") == "onnxruntime" and "connector=" in diag.get("model", "backend_probe")
    topic = f"/engine_faults_{proc_tag()}/image"
    pub = publish(ros_client, topic, image_messages(STAMPS[:4]))
    assert wait_for(lambda: diag.get("input", "frames") == "4", 20.0), diag.latest
    reply = ros_client.ask(proc.fqn)
    assert reply.error_code == ErrorCode.OK, reply.error_message
    assert [s.sec * 10**9 + s.nanosec for s in reply.frame_stamps] == STAMPS[2:4]
    assert reply.config_hash == config_hash(TINY)
    assert ros_client.transition(proc.fqn, "deactivate") and ros_client.transition(proc.fqn, "cleanup")
    assert proc.alive()
    ros_client.node.destroy_publisher(pub)


def proc_tag() -> int:
    import os
    return os.getpid()

"""Engine cache: key derivation, manifest layout, corrupt/mismatch detection, build policy."""
import json

import pytest

from engines.engine_cache import (CorruptEngineError, EngineCache, EngineKey, EngineMismatchError,
                                  EngineMissingError, onnx_model_sha256, resolve_engine,
                                  sha256_file)
from engines.profiles import frame_count_profiles, profiles_to_json


def make_key(**overrides) -> EngineKey:
    fields = dict(onnx_sha256="a" * 64, tensorrt_version="10.3.0", gpu_name="Orin",
                  compute_capability="8.7", precision="fp16",
                  profiles=profiles_to_json(frame_count_profiles(
                      "images", [(1, 8, 16)], (224, 336, 518), (224, 448, 518))))
    fields.update(overrides)
    return EngineKey(**fields)


@pytest.mark.parametrize("field,value", [
    ("onnx_sha256", "b" * 64), ("tensorrt_version", "11.4.0"), ("gpu_name", "NVIDIA H100"),
    ("compute_capability", "9.0"), ("precision", "int8"),
    ("profiles", profiles_to_json(frame_count_profiles("images", [(1, 8, 32)],
                                                        (224, 336, 518), (224, 448, 518)))),
])
def test_every_key_field_changes_the_digest(field, value):
    base = make_key()
    other = make_key(**{field: value})
    assert base.digest() != other.digest()
    assert [d.split(":")[0] for d in base.differences(other)] == [field]


def test_digest_is_stable_and_store_writes_manifest_next_to_engine(tmp_path):
    key = make_key()
    assert key.digest() == make_key().digest()
    cache = EngineCache(tmp_path)
    entry = cache.store("spatial_encoder", key, b"PLAN" * 100, notes={"builder": "test"})
    assert entry.engine_path == tmp_path / "spatial_encoder" / f"{key.short}.engine"
    manifest = json.loads(entry.manifest_path.read_text())
    assert manifest["key_digest"] == key.digest()
    assert manifest["engine_size"] == 400
    assert manifest["engine_sha256"] == sha256_file(entry.engine_path)
    assert manifest["key"]["precision"] == "fp16"
    hit = cache.lookup("spatial_encoder", key)
    assert hit is not None and hit.read_bytes() == b"PLAN" * 100
    assert not list((tmp_path / "spatial_encoder").glob("*.tmp"))


def test_truncated_engine_is_reported_as_corrupt(tmp_path):
    cache = EngineCache(tmp_path)
    entry = cache.store("connector", make_key(), b"x" * 1000)
    entry.engine_path.write_bytes(b"x" * 10)
    with pytest.raises(CorruptEngineError, match="truncated"):
        cache.lookup("connector", make_key())


def test_same_size_modified_engine_is_reported_as_corrupt(tmp_path):
    cache = EngineCache(tmp_path)
    entry = cache.store("connector", make_key(), b"x" * 1000)
    entry.engine_path.write_bytes(b"y" * 1000)
    with pytest.raises(CorruptEngineError, match="sha256"):
        cache.lookup("connector", make_key())


def test_missing_or_broken_manifest_is_corrupt(tmp_path):
    cache = EngineCache(tmp_path)
    entry = cache.store("connector", make_key(), b"x" * 10)
    entry.manifest_path.write_text("{not json")
    with pytest.raises(CorruptEngineError, match="unreadable"):
        cache.lookup("connector", make_key())
    entry.manifest_path.unlink()
    with pytest.raises(CorruptEngineError, match="manifest missing"):
        cache.lookup("connector", make_key())


def test_engine_file_with_other_key_is_a_mismatch(tmp_path):
    cache = EngineCache(tmp_path)
    entry = cache.store("vision_encoder", make_key(), b"x" * 10)
    with pytest.raises(EngineMismatchError, match="gpu_name: NVIDIA H200 != Orin"):
        cache.verify_file(entry.engine_path, expected_key=make_key(gpu_name="NVIDIA H200"))


def test_policy_never_builds_without_allow_build(tmp_path):
    cache = EngineCache(tmp_path)
    calls = []

    def build():
        calls.append(1)
        return b"ENGINE"

    with pytest.raises(EngineMissingError, match="spatial-mllm-engines build"):
        resolve_engine(cache, "spatial_encoder", make_key(), build, allow_build=False)
    assert calls == []
    built = resolve_engine(cache, "spatial_encoder", make_key(), build, allow_build=True)
    assert calls == [1] and built.read_bytes() == b"ENGINE"
    again = resolve_engine(cache, "spatial_encoder", make_key(), build, allow_build=True)
    assert calls == [1] and again.engine_path == built.engine_path  # cache hit, no rebuild
    # a TensorRT upgrade: other key -> mismatch error naming the field, still no build
    with pytest.raises(EngineMismatchError, match="tensorrt_version: 10.4.0 != 10.3.0"):
        resolve_engine(cache, "spatial_encoder", make_key(tensorrt_version="10.4.0"), build)
    assert calls == [1]


def test_policy_rebuilds_corrupt_engine_only_when_allowed(tmp_path):
    cache = EngineCache(tmp_path)
    entry = cache.store("connector", make_key(), b"GOOD" * 10)
    entry.engine_path.write_bytes(b"GO")
    with pytest.raises(CorruptEngineError):
        resolve_engine(cache, "connector", make_key(), lambda: b"NEW", allow_build=False)
    fixed = resolve_engine(cache, "connector", make_key(), lambda: b"NEW", allow_build=True)
    assert fixed.read_bytes() == b"NEW"
    assert cache.lookup("connector", make_key()).read_bytes() == b"NEW"


def test_onnx_hash_covers_external_data(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    import numpy as np
    weight = numpy_helper.from_array(np.ones((64, 64), np.float32), name="w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
                              [weight])
    model = helper.make_model(graph)
    path = tmp_path / "m.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="m.weights",
                    size_threshold=0)
    first = onnx_model_sha256(path)
    data = (tmp_path / "m.weights").read_bytes()
    (tmp_path / "m.weights").write_bytes(data[:-4] + b"\x00\x00\x80\x3f"[::-1])
    assert onnx_model_sha256(path) != first

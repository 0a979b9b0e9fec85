"""Safe model loading (ros2_spatial_mllm/safety.py) on real checkpoint files.

The good checkpoint is the embedded tiny model (written by B's `save_checkpoint`), copied into
tmp_path; every fault case is a damaged copy of it: truncated shard data, a header cut short,
a missing shard of a 2-shard split, pickle-only weights, unfinished downloads, a half-written
config.json, an index whose shard name escapes the directory.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.numpy import load_file, save_file

from ros2_spatial_mllm.safety import (UnsafeModelError, check_model_dir, config_hash, enforce_offline,
                                      model_identity, model_revision, read_safetensors_header)

TINY = Path(__file__).resolve().parents[2] / "ros2_spatial_mllm" / "assets" / "tiny"
INDEX = "model.safetensors.index.json"


@pytest.fixture
def ckpt(tmp_path) -> Path:
    """A copy of the tiny checkpoint (config, 1 safetensors shard + index, tokenizer files)."""
    return Path(shutil.copytree(TINY, tmp_path / "tiny"))


def _shard(path: Path) -> Path:
    return sorted(path.glob("*.safetensors"))[0]


def _split_in_two(path: Path) -> list[Path]:
    """Rewrite the checkpoint as 2 shards + index (like a large official checkpoint)."""
    tensors = load_file(str(_shard(path)))
    _shard(path).unlink()
    keys = sorted(tensors)
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2:]]
    weight_map, names = {}, []
    for i, part in enumerate(halves, start=1):
        name = f"model-{i:05d}-of-00002.safetensors"
        save_file({k: tensors[k] for k in part}, str(path / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
        names.append(path / name)
    total = sum(t.nbytes for t in tensors.values())
    (path / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return names


def test_good_checkpoint_passes_with_identity(ckpt):
    report = check_model_dir(ckpt)
    header, data_bytes = read_safetensors_header(_shard(ckpt))
    index = json.loads((ckpt / INDEX).read_text())
    assert report.num_tensors == len(header) == len(index["weight_map"])
    assert report.tensor_bytes == data_bytes == index["metadata"]["total_size"]
    assert report.warnings == [] and report.ignored_pickles == []
    assert len(report.config_hash) == 16 and report.revision.startswith("weights-")
    assert report.as_dict()["num_tensors"] == report.num_tensors
    # identical content elsewhere -> identical identity
    assert model_identity(TINY) == {"config_hash": report.config_hash, "revision": report.revision}


def test_two_shard_checkpoint_passes_and_missing_shard_is_refused(ckpt):
    shards = _split_in_two(ckpt)
    report = check_model_dir(ckpt)
    assert len(report.weight_files) == 2 and report.warnings == []
    shards[1].unlink()
    with pytest.raises(UnsafeModelError, match=r"missing .*model-00002-of-00002"):
        check_model_dir(ckpt)


@pytest.mark.parametrize("cut, message", [
    (1000, r"truncated \(half-written\?\): header declares \d+ bytes of tensor data, the file holds \d+"),
    ("header", r"header length \d+ does not fit the file"),
    (4, r"no 8-byte header length"),
])
def test_half_written_shard_is_refused(ckpt, cut, message):
    shard = _shard(ckpt)
    data = shard.read_bytes()
    keep = {"header": 8 + 50, 4: 4}.get(cut, len(data) - 1000 if cut == 1000 else cut)
    shard.write_bytes(data[:keep])
    with pytest.raises(UnsafeModelError, match=message):
        check_model_dir(ckpt)


def test_padded_shard_and_lying_header_are_refused(ckpt):
    shard = _shard(ckpt)
    shard.write_bytes(shard.read_bytes() + b"\0" * 64)
    with pytest.raises(UnsafeModelError, match="trailing bytes"):
        check_model_dir(ckpt)
    # a header whose dtype/shape disagree with its byte range
    tensors = {"w": __import__("numpy").zeros((4, 4), "float32")}
    save_file(tensors, str(shard))
    raw = bytearray(shard.read_bytes())
    header_len = int.from_bytes(raw[:8], "little")
    header = raw[8:8 + header_len].replace(b"[4,4]", b"[4,8]")
    shard.write_bytes(bytes(raw[:8]) + bytes(header) + bytes(raw[8 + header_len:]))
    (ckpt / INDEX).unlink()
    with pytest.raises(UnsafeModelError, match=r"tensor 'w' \(F32 \[4, 8\]\) needs 128 bytes, its offsets give 64"):
        check_model_dir(ckpt)


def test_index_key_absent_from_shard_is_refused(ckpt):
    index = json.loads((ckpt / INDEX).read_text())
    index["weight_map"]["lm_head.extra"] = _shard(ckpt).name
    (ckpt / INDEX).write_text(json.dumps(index))
    with pytest.raises(UnsafeModelError, match="'lm_head.extra'"):
        check_model_dir(ckpt)


def test_pickles_are_never_loaded(ckpt, tmp_path):
    # pickle next to safetensors (HF training output): ignored, listed
    (ckpt / "training_args.bin").write_bytes(b"\x80\x04not loaded")
    assert check_model_dir(ckpt).ignored_pickles == ["training_args.bin"]
    # an index naming a pickle shard
    index = json.loads((ckpt / INDEX).read_text())
    index["weight_map"] = {k: "pytorch_model.bin" for k in index["weight_map"]}
    (ckpt / INDEX).write_text(json.dumps(index))
    with pytest.raises(UnsafeModelError, match="only safetensors shards are loaded, never pickles"):
        check_model_dir(ckpt)
    # pickle-only directory
    only = tmp_path / "pickle_only"
    only.mkdir()
    shutil.copy(ckpt / "config.json", only / "config.json")
    (only / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(UnsafeModelError, match=r"no safetensors weights \(found pickle weights"):
        check_model_dir(only)


def test_escaping_shard_name_is_refused(ckpt):
    index = json.loads((ckpt / INDEX).read_text())
    index["weight_map"] = {k: "../elsewhere.safetensors" for k in index["weight_map"]}
    (ckpt / INDEX).write_text(json.dumps(index))
    with pytest.raises(UnsafeModelError, match="not a plain file name"):
        check_model_dir(ckpt)


def test_missing_and_malformed_directories_are_refused(ckpt, tmp_path):
    with pytest.raises(UnsafeModelError, match="does not exist"):
        check_model_dir(tmp_path / "nope")
    with pytest.raises(UnsafeModelError, match="is not a directory"):
        check_model_dir(ckpt / "config.json")
    (ckpt / "model-00001-of-00001.safetensors.incomplete").write_bytes(b"")
    with pytest.raises(UnsafeModelError, match="unfinished downloads"):
        check_model_dir(ckpt)
    (ckpt / "model-00001-of-00001.safetensors.incomplete").unlink()
    text = (ckpt / "config.json").read_text()
    (ckpt / "config.json").write_text(text[: len(text) // 2])
    with pytest.raises(UnsafeModelError, match="config .* unreadable or not JSON"):
        check_model_dir(ckpt)
    (ckpt / "config.json").unlink()
    with pytest.raises(UnsafeModelError, match="no config.json"):
        check_model_dir(ckpt)
    assert model_identity(ckpt) == {"config_hash": "unknown", "revision": model_revision(ckpt)}


def test_config_hash_and_revision_track_content(ckpt, tmp_path):
    before, rev = config_hash(ckpt), model_revision(ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps(config, indent=7))        # formatting only
    assert config_hash(ckpt) == before
    config["spatial_config"] = {**config.get("spatial_config", {}), "img_size": 999}
    (ckpt / "config.json").write_text(json.dumps(config))
    assert config_hash(ckpt) != before
    _split_in_two(ckpt)                                                     # new shard headers
    assert model_revision(ckpt) != rev
    (ckpt / "revision").write_text("v1.1-135K\n")
    assert model_revision(ckpt) == "v1.1-135K"
    snapshot = tmp_path / "hub" / "snapshots" / ("ab" * 20)
    shutil.copytree(TINY, snapshot)
    assert check_model_dir(snapshot).revision == "ab" * 20


def test_enforce_offline_makes_hub_calls_fail_fast(tmp_path):
    """In a fresh interpreter: huggingface_hub imported first (flag read at import), then
    enforce_offline(); a download and an API call must raise without network, in < 5 s."""
    code = f"""
import os, time
os.environ.pop("HF_HUB_OFFLINE", None); os.environ.pop("TRANSFORMERS_OFFLINE", None)
import huggingface_hub
from huggingface_hub import constants
assert constants.HF_HUB_OFFLINE is False
from ros2_spatial_mllm.safety import enforce_offline
env = enforce_offline()
assert os.environ["HF_HUB_OFFLINE"] == "1" and constants.is_offline_mode()
t = time.monotonic()
for call in (lambda: huggingface_hub.hf_hub_download("Diankun/Spatial-MLLM-v1.1-Instruct-135K", "config.json",
                                                     cache_dir={str(tmp_path)!r}),
             lambda: huggingface_hub.HfApi().model_info("Diankun/Spatial-MLLM-v1.1-Instruct-135K")):
    try:
        call()
        raise SystemExit("hub call succeeded")
    except Exception as exc:
        print(type(exc).__name__)
print("elapsed", time.monotonic() - t)
"""
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.split()
    assert "LocalEntryNotFoundError" in lines and "OfflineModeIsEnabled" in lines, proc.stdout
    assert float(lines[-1]) < 5.0 and time.monotonic() - started < 60
    assert not list((tmp_path).rglob("config.json"))   # nothing downloaded
    assert enforce_offline()["HF_HUB_OFFLINE"] == "1"


def test_spatial_mllm_load_checks_before_loading(ckpt):
    from ros2_spatial_mllm.inference import SpatialMLLM
    model = SpatialMLLM.load(str(ckpt))
    try:
        info = model.info
        assert info["config_hash"] == config_hash(ckpt) and info["revision"] == model_revision(ckpt)
        assert "safetensors only" in info["model_check"]
    finally:
        model.close()
    shard = _shard(ckpt)
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(UnsafeModelError, match="truncated"):
        SpatialMLLM.load(str(ckpt))

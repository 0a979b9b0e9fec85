"""/diagnostics for the node (diagnostic_updater is not on PyPI: a DiagnosticArray built by hand).

Two statuses per publication, named "<node name>: input" and "<node name>: model":
  input: input_rate_hz, frames, fill, bytes, span_s, received, kept, dropped_<reason> for every
         buffer drop reason, decode errors by kind, geometry worker counters;
  model: model_state, device, queries by error code, waiting/running, last query latency.
Levels: input WARN when active but no frame arrived for `stale_after_s`; model ERROR when the
model failed to load, WARN while not ready.
"""
from __future__ import annotations

import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue


def _kv(key: str, value) -> KeyValue:
    if isinstance(value, float):
        value = f"{value:.3f}"
    return KeyValue(key=str(key), value=str(value))


def model_diagnostics(model, device: str) -> dict:
    """The loaded model's diagnostics fields: its scalar `info` entries, the device, and for an
    exported backend the export checked at activate (backend, onnx_dir, probe errors)."""
    info = getattr(model, "info", {}) or {}
    fields = {k: v for k, v in dict(info).items() if isinstance(v, (str, int, float, bool))}
    fields["device"] = device
    check = getattr(model, "backend_check", None)
    if check:
        fields.update(backend=check["backend"], onnx_dir=check["onnx_dir"],
                      backend_probe=" ".join(f"{k}={v:.2g}" for k, v in check["probe"].items()))
    return fields


def build_diagnostics(node_name: str, stamp, lifecycle_state: str, buffer_stats: dict | None,
                      intake_errors: dict, geometry_stats: dict | None, engine_stats: dict | None,
                      model_info: dict, last_frame_age_s: float | None,
                      stale_after_s: float = 5.0) -> DiagnosticArray:
    """One DiagnosticArray from plain stats dicts (FrameBuffer.stats(), QueryEngine.stats(), ...)."""
    array = DiagnosticArray()
    array.header.stamp = stamp

    inp = DiagnosticStatus(name=f"{node_name}: input", hardware_id=node_name)
    inp.values.append(_kv("lifecycle_state", lifecycle_state))
    if buffer_stats is None:
        inp.level, inp.message = DiagnosticStatus.OK, f"not configured ({lifecycle_state})"
    else:
        for key in ("input_rate_hz", "frames", "max_frames", "fill", "bytes", "span_s",
                    "received", "kept", "rejected_total", "time_jumps"):
            inp.values.append(_kv(key, buffer_stats.get(key, 0)))
        for reason, count in sorted(buffer_stats.get("dropped", {}).items()):
            inp.values.append(_kv(f"dropped_{reason}", count))
        for reason, count in sorted(intake_errors.items()):
            inp.values.append(_kv(f"intake_{reason}", count))
        for key, value in sorted((geometry_stats or {}).items()):
            inp.values.append(_kv(f"geometry_{key}", value))
        age = last_frame_age_s
        inp.values.append(_kv("last_frame_age_s", -1.0 if age is None else age))
        if lifecycle_state == "active" and (age is None or age > stale_after_s):
            inp.level = DiagnosticStatus.WARN
            inp.message = "no camera frames" if age is None else f"no camera frame for {age:.1f} s"
        else:
            inp.level = DiagnosticStatus.OK
            inp.message = (f"{buffer_stats.get('frames', 0)} frames, "
                           f"{buffer_stats.get('input_rate_hz', 0.0):.1f} Hz in")
    array.status.append(inp)

    model = DiagnosticStatus(name=f"{node_name}: model", hardware_id=node_name)
    state = (engine_stats or {}).get("state", "unloaded")
    model.values.append(_kv("model_state", state))
    for key, value in sorted(model_info.items()):
        model.values.append(_kv(key, value))
    if engine_stats:
        model.values.append(_kv("queries_submitted", engine_stats.get("submitted", 0)))
        model.values.append(_kv("queries_waiting", engine_stats.get("waiting", 0)))
        model.values.append(_kv("query_running", engine_stats.get("running", False)))
        for code, count in sorted(engine_stats.get("by_code", {}).items()):
            model.values.append(_kv(f"queries_{code}", count))
        last = engine_stats.get("last_latency_ms", {}) or {}
        model.values.append(_kv("last_query_latency_ms", float(last.get("total_ms", 0.0))))
        for key, value in sorted(last.items()):
            if key != "total_ms":
                model.values.append(_kv(f"last_{key}", float(value)))
    if state == "error":
        model.level, model.message = DiagnosticStatus.ERROR, model_info.get("error", "model failed to load")
    elif state == "ready":
        model.level, model.message = DiagnosticStatus.OK, "ready"
    else:
        model.level, model.message = DiagnosticStatus.WARN, f"model {state}"
    array.status.append(model)
    return array


def age_since(monotonic_stamp: float | None) -> float | None:
    return None if monotonic_stamp is None else time.monotonic() - monotonic_stamp

"""Backend benchmark: PyTorch vs ONNX Runtime per stage (CPU, tiny preset), GPU at official size.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_backends.py --quick      # tiny CPU run
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_backends.py              # CPU table
    .venv/bin/python benchmarks/bench_backends.py --device cuda                 # + GPU section
    python3 benchmarks/bench_backends.py --device cuda --gpu-only               # GPU section alone

CPU section (every run): the tiny preset (random weights, fp32), one query of --frames frames
at --height x --width; stages vision_encoder (Qwen ViT + merger), spatial_encoder (VGGT
aggregator), connector (packed spatial tokens -> LLM width), prefill (all encoders + connector
+ one LLM pass over the prompt), and decode tokens/s over --new-tokens greedy tokens (the LLM
runs in PyTorch behind both backends: the decode ratio is ~1 by design). Median of
--repeats after one warm-up, the two backends alternating run by run (the CPU may be shared).
ratio = torch_ms / onnxruntime_ms (> 1: ONNX Runtime faster). The official-size FLOPs of a
16-frame query (torch's FlopCounterMode on the meta device) and their compute floors on
H100/H200 are added on paper. Writes benchmarks/results/backends_cpu.json.

GPU section (--device cuda, only when CUDA exists): official sizes, random weights, bf16:
spatial encoder on 16 frames (336x518 as the published VGGT timings, and 476x644), full 16-frame
prefill, decode tokens/s (eager DynamicCache; StaticCache + torch.compile), peak memory, each
against its floor (FLOPs / peak bf16, or weight bytes / HBM bandwidth for decode), and the
reference sampling pass (VGGT with heads on 128 candidates) vs our incremental pick
(VoxelIndex.select over 128 cached frames). Writes benchmarks/results/backends_gpu.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.flops import count_flops  # noqa: E402
from engines.export import export_all  # noqa: E402
from engines.export_modules import SpatialEncoderExport, VisionEncoderExport  # noqa: E402
from engines.model_factory import build_model  # noqa: E402
from ros2_spatial_mllm.backends import get_backend  # noqa: E402
from ros2_spatial_mllm.backends.llm import GenerationSettings, LLMDecoder  # noqa: E402

# dense bf16 tensor-core peak (TFLOP/s) and HBM bandwidth (TB/s), vendor datasheets
GPU_PEAKS = {"H200": (989.4, 4.8), "H100 PCIe": (756.0, 2.0), "H100": (989.4, 3.35),
             "A100": (312.0, 2.0)}


def timed(fn: Callable, repeats: int, sync: Callable = lambda: None) -> float:
    """Median wall time (ms) of fn() over `repeats` runs after one warm-up."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def prompt_ids(model, num_video_tokens: int, device) -> torch.Tensor:
    cfg = model.config
    ids = [20, 21, 22, cfg.vision_start_token_id] + [cfg.video_token_id] * num_video_tokens
    ids += [cfg.vision_end_token_id] + list(range(30, 60))  # ~35 text tokens, like a question
    return torch.tensor([ids], device=device)


def stage_closures(backend, decoder: LLMDecoder, frames) -> dict:
    """name -> zero-argument callable running that stage once with `backend`."""
    height, width = frames.shape[3:]
    grid = torch.tensor([[frames.shape[1] // 2, height // 14, width // 14]], device=frames.device)
    packed = backend.pack(backend.spatial_encoder(frames), height, width)
    ids = prompt_ids(decoder.model, packed.shape[0], frames.device)
    settings = GenerationSettings(max_new_tokens=1)
    return {"vision_encoder_ms": lambda: backend.vision_encoder(frames),
            "spatial_encoder_ms": lambda: backend.spatial_encoder(frames),
            "connector_ms": lambda: backend.connector(packed),
            "prefill_ms": lambda: decoder.generate(ids, backend.fuse_video(frames), grid,
                                                   settings)}


def interleaved_times(closures: dict, repeats: int) -> dict:
    """{backend: {stage: median ms}}; backends alternate run by run so that both see the same
    machine load (the CPU is shared)."""
    names = list(closures)
    stages = list(closures[names[0]])
    times = {n: {st: [] for st in stages} for n in names}
    for stage in stages:
        for n in names:
            closures[n][stage]()  # warm-up
        for _ in range(repeats):
            for n in names:
                t0 = time.perf_counter()
                closures[n][stage]()
                times[n][stage].append((time.perf_counter() - t0) * 1000)
    return {n: {st: round(statistics.median(v), 2) for st, v in times[n].items()} for n in names}


def decode_rates(backends: dict, decoder: LLMDecoder, frames, runs: int, new_tokens: int) -> dict:
    """{backend: greedy decode tokens/s} after each backend's own prefill (fused tokens from that
    backend); median over `runs`, backends alternating run by run after one warm-up each."""
    height, width = frames.shape[3:]
    grid = torch.tensor([[frames.shape[1] // 2, height // 14, width // 14]], device=frames.device)
    settings = GenerationSettings(max_new_tokens=new_tokens)
    prompts = {}
    for name, backend in backends.items():
        fused = backend.fuse_video(frames)
        prompts[name] = (prompt_ids(decoder.model, fused.shape[0], frames.device), fused, grid)
        decoder.generate(*prompts[name], settings)  # warm-up
    rates = {name: [] for name in backends}
    for _ in range(runs):
        for name in backends:
            rates[name].append(decoder.generate(*prompts[name], settings).decode_tokens_per_s)
    return {name: round(statistics.median(v), 1) for name, v in rates.items()}


def spatial_encoder_flops(frames: int, height: int, width: int, preset: str = "official") -> float:
    """FLOPs of the spatial encoder alone (any multiple of 14; the 2D encoder needs 28)."""
    model = build_model(preset, device="meta", dtype=torch.bfloat16)
    x = torch.empty(1, frames, 3, height, width, device="meta", dtype=torch.bfloat16)
    return count_flops(lambda: SpatialEncoderExport(model.spatial_encoder)(x))


def official_flops(frames: int, height: int, width: int, text_tokens: int = 36,
                   preset: str = "official") -> dict:
    """FLOPs of the stages of one query (meta device: nothing is allocated)."""
    model = build_model(preset, device="meta", dtype=torch.bfloat16)
    x = torch.empty(1, frames, 3, height, width, device="meta", dtype=torch.bfloat16)
    tokens = frames // 2 * (height // 28) * (width // 28)
    flops = {"spatial_encoder": spatial_encoder_flops(frames, height, width, preset),
             "vision_encoder": count_flops(lambda: VisionEncoderExport(model.model.visual)(x))}
    c = model.connector
    packed = torch.empty(tokens, c.merged_dim, device="meta", dtype=torch.bfloat16)
    flops["connector"] = count_flops(lambda: c.mlp(c.ln_q(packed)))
    length = tokens + text_tokens
    embeds = torch.empty(1, length, model.config.text_config.hidden_size, device="meta",
                         dtype=torch.bfloat16)
    pos = torch.arange(length, device="meta").view(1, 1, -1).expand(3, 1, -1)
    flops["llm_prefill"] = count_flops(lambda: model.lm_head(model.model.language_model(
        inputs_embeds=embeds, position_ids=pos, use_cache=False).last_hidden_state[:, -1:]))
    flops["prefill_total"] = sum(flops.values())
    llm_params = sum(p.numel() for p in model.model.language_model.parameters())
    return {"frames": frames, "height": height, "width": width, "video_tokens": tokens,
            "flops": flops, "llm_params": llm_params}


def cpu_section(args) -> dict:
    torch.manual_seed(0)
    model = build_model("tiny")
    frames = torch.rand(1, args.frames, 3, args.height, args.width)
    result = {"machine": machine_info("cpu"), "preset": "tiny", "dtype": "fp32",
              "frames": args.frames, "height": args.height, "width": args.width,
              "repeats": args.repeats, "new_tokens": args.new_tokens}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        export_all(model, tmp, preset="tiny")
        result["export_s"] = round(time.perf_counter() - t0, 2)
        threads = int(os.environ.get("OMP_NUM_THREADS", "0")) or None
        backends = {"torch": get_backend("torch", model),
                    "onnxruntime": get_backend("onnxruntime", model, onnx_dir=tmp,
                                               intra_op_threads=threads)}
        decoder = LLMDecoder(model)
        stages = interleaved_times({name: stage_closures(b, decoder, frames)
                                    for name, b in backends.items()}, args.repeats)
        # decode runs are short (tens of ms): 4x the repeats to tame the shared machine's noise
        rates = decode_rates(backends, decoder, frames, 4 * args.repeats, args.new_tokens)
    for name, rate in rates.items():
        stages[name]["decode_tokens_per_s"] = rate
    result["stages"] = stages
    ratio = {k: round(stages["torch"][k] / stages["onnxruntime"][k], 3)
             for k in stages["torch"] if k.endswith("_ms")}
    ratio["decode_tokens_per_s"] = round(rates["onnxruntime"] / rates["torch"], 3)  # > 1: ORT faster
    result["ratio_torch_over_onnxruntime"] = ratio
    result["note"] = ("ratios > 1 mean ONNX Runtime is faster (ms: torch / ORT; decode tokens/s: "
                      "ORT / torch). Decode runs the PyTorch LLM with a KV cache behind both "
                      "backends (the LLM is not exported to ONNX), so its ratio is ~1 by design; "
                      "new_tokens greedy tokens after each backend's own prefill")
    if not args.quick:
        paper = official_flops(16, 476, 644)
        paper["floor_ms"] = {gpu: {k: round(v / (peak * 1e12) * 1000, 2)
                                   for k, v in paper["flops"].items()}
                             for gpu, (peak, _) in GPU_PEAKS.items() if gpu in ("H100", "H200")}
        result["official_16_frame_query_on_paper"] = paper
    return result


GPU_SIZES = {"spatial": ((16, 336, 518), (16, 476, 644)), "query": (16, 476, 644),
             "candidates": (128, 392, 518), "new_tokens": 128}


def gpu_section(args, device: str = "cuda", preset: str = "official",
                sizes: dict = GPU_SIZES, progress: Path | None = None) -> dict:
    """Official-size stage timings on `device` (preset/sizes smaller only for the CPU smoke test).
    progress: a JSON file rewritten after every entry, so a run stopped at its time limit keeps
    what it measured. The riskiest entry (compiled decode) runs last."""
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    name = torch.cuda.get_device_name() if cuda else platform.processor()
    peak, bandwidth = next((v for k, v in GPU_PEAKS.items() if k in name), (None, None))
    dtype = torch.bfloat16
    model = build_model(preset, device=dev, dtype=dtype)
    backend = get_backend("torch", model)
    out = {"machine": machine_info(device), "gpu": name, "peak_bf16_tflops": peak,
           "hbm_tb_per_s": bandwidth, "preset": f"{preset} (random weights)", "dtype": "bf16"}

    def report(label):
        print(label, out[label], flush=True)
        if progress is not None:
            progress.write_text(json.dumps(out, indent=2))

    def measure(label, fn, flops=None):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        ms = timed(fn, args.repeats, sync)
        entry = {"ms": round(ms, 2)}
        if cuda:
            entry["peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
        if flops:
            entry["tflop"] = round(flops / 1e12, 6)
        if flops and peak:
            entry["floor_ms"] = round(flops / (peak * 1e12) * 1e3, 2)
            entry["x_floor"] = round(ms / entry["floor_ms"], 2)
        out[label] = entry
        report(label)

    with torch.inference_mode():
        for frames, h, w in sizes["spatial"]:
            x = torch.rand(1, frames, 3, h, w, device=dev, dtype=dtype)
            flops = spatial_encoder_flops(frames, h, w, preset=preset)  # 518 = 37 patches: 14, not 28
            measure(f"spatial_encoder_{frames}f_{h}x{w}", lambda: backend.spatial_encoder(x), flops)
        frames, h, w = sizes["query"]
        paper = official_flops(frames, h, w, preset=preset)
        out[f"flops_{frames}f_{h}x{w}"] = paper["flops"]
        x = torch.rand(1, frames, 3, h, w, device=dev, dtype=dtype)
        grid = torch.tensor([[frames // 2, h // 14, w // 14]], device=dev)
        fused = backend.fuse_video(x)
        ids = prompt_ids(model, fused.shape[0], dev)
        decoder = LLMDecoder(model)
        measure(f"prefill_{frames}f_{h}x{w}", lambda: decoder.generate(
            ids, backend.fuse_video(x), grid, GenerationSettings(max_new_tokens=1)),
            paper["flops"]["prefill_total"])
        weight_bytes = 2 * paper["llm_params"]
        ceiling = round(bandwidth * 1e12 / weight_bytes, 1) if bandwidth else None
        frames, h, w = sizes["candidates"]
        candidates = torch.rand(1, frames, 3, h, w, device=dev, dtype=dtype)
        label = f"reference_sampling_{frames}f_{h}x{w}"
        measure(label, lambda c=candidates: model.spatial_encoder.vggt_model(c))  # heads chunked
        del candidates
        out["incremental_pick_ms"] = incremental_pick_ms(args.repeats, frames, h, w)
        out["sampling_speedup"] = round(out[label]["ms"] / out["incremental_pick_ms"], 1)
        report("sampling_speedup")
        decoders = [("decode_eager", lambda: decoder)]
        if cuda:
            decoders.append(("decode_static_compiled", lambda: LLMDecoder(
                model, static_cache=True, compile_decode=True,
                max_cache_len=ids.shape[1] + sizes["new_tokens"] + 32)))
        for key, make in decoders:
            try:
                dec = make()
                runs = [dec.generate(ids, fused, grid,
                                     GenerationSettings(max_new_tokens=sizes["new_tokens"]))
                        for _ in range(3)]  # the first runs compile / warm up
                out[key] = {"tokens_per_s": round(runs[-1].decode_tokens_per_s, 1),
                             "bandwidth_ceiling_tokens_per_s": ceiling}
            except Exception as exc:  # a failed decode path is a result to report, not a crash
                out[key] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
            report(key)
    return out


def incremental_pick_ms(repeats: int, frames: int = 128, height: int = 392,
                        width: int = 518) -> float:
    """Our query-time cost: greedy max-coverage (k=16) over `frames` frames with cached voxels."""
    from ros2_spatial_mllm.sampling.sources import frame_voxels_from_depth
    from ros2_spatial_mllm.sampling.space_aware import VoxelIndex
    from ros2_spatial_mllm.sampling.synthetic import room_scan

    depth, intrinsics, world_from_camera, _ = room_scan(frames, height=height, width=width)
    index = VoxelIndex()
    for i in range(frames):
        index.add(i, frame_voxels_from_depth(depth[i], intrinsics, world_from_camera[i]))
    return round(timed(lambda: index.select(16), repeats), 3)


def machine_info(device: str) -> dict:
    import onnxruntime

    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average_1min": round(os.getloadavg()[0], 2)}
    if device == "cuda":
        info["cuda"] = torch.version.cuda
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="cuda adds the official-size GPU section (needs a CUDA GPU)")
    p.add_argument("--quick", action="store_true", help="2 repeats, 4 frames, no FLOP count")
    p.add_argument("--gpu-only", action="store_true",
                   help="with --device cuda: skip the CPU section (GPU time is the scarce one)")
    p.add_argument("--frames", type=int, default=8, help="frames per query (even)")
    p.add_argument("--height", type=int, default=224, help="frame height (multiple of 28)")
    p.add_argument("--width", type=int, default=308, help="frame width (multiple of 28)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per stage (median)")
    p.add_argument("--new-tokens", type=int, default=32, help="decoded tokens for tokens/s")
    p.add_argument("--output-dir", default=str(ROOT / "benchmarks" / "results"),
                   help="folder for backends_cpu.json / backends_gpu.json")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.frames, args.new_tokens = 2, 4, 8
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not (args.gpu_only and args.device == "cuda"):
        cpu = cpu_section(args)
        (out_dir / "backends_cpu.json").write_text(json.dumps(cpu, indent=2))
        print(json.dumps({"stages": cpu["stages"], "ratio": cpu["ratio_torch_over_onnxruntime"]},
                         indent=2))
    if args.device == "cuda":
        if not torch.cuda.is_available():
            print("bench_backends: --device cuda but no CUDA device; GPU section skipped",
                  file=sys.stderr)
            return 1
        gpu = gpu_section(args, progress=out_dir / "backends_gpu.json")
        (out_dir / "backends_gpu.json").write_text(json.dumps(gpu, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

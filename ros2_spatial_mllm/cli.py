"""`spatial-mllm` command line: ask a spatial question about a video or a folder of images.

    spatial-mllm ask --video room.mp4 --question "How many chairs are in this room?"
    spatial-mllm ask --video frames/ --fps 2 --question "Which is closer to the bed?" \
        --options "A. chair" "B. table" --sampling uniform --num-frames 8

Tiny CPU run (embedded tiny preset: the trained default from training/configs/tiny_default.yaml):
    spatial-mllm ask --video ros2_spatial_mllm/assets/demo/room.mp4 --question "How many chairs?" --num-frames 8
    spatial-mllm ask --video clip.mp4 --question "How many chairs?" --device cuda --decode-mode compiled
        (--decode-mode eager|static|compiled: the LLM decode path, see ros2_spatial_mllm/inference.py;
         --numeric-answers expected_mra|greedy: how numbers are chosen, ros2_spatial_mllm/numeric_answer.py)

Prints ONE JSON object on stdout: answer (raw text), parsed (kind/choice/value/unit), frames
(selected source indices and timestamps), sampling (method, coverage, voxel size, gains), model
info and timings_ms (read_video, load_model, geometry, voxelize, pick, sampling = the three
before, the model's own breakdown, total); with --report PATH also "report" {html, png, tiles}: a
one-page report (chosen frames in a strip, question, answer) from ros2_spatial_mllm.report. Errors: one line on stderr, exit code 2 for bad
input, 1 for internal failures, 130 on Ctrl-C; --debug adds the traceback.

Space-aware sampling runs the spatial encoder's camera + depth heads once over the candidates
(<= --max-candidates frames by linspace, reference: 128), voxelises each frame and picks
--num-frames frames by greedy voxel coverage (ros2_spatial_mllm.sampling). With --depth DIR and
--camera JSON (sensor depth images, one per frame, + intrinsics and poses) the geometry comes from
the sensor instead and no model pass is needed for sampling:
    spatial-mllm ask --video ros2_spatial_mllm/assets/demo/room.mp4 --question "How many chairs?" \
        --depth ros2_spatial_mllm/assets/demo/depth --camera ros2_spatial_mllm/assets/demo/room.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from typing import Optional, Sequence

from ros2_spatial_mllm.numeric_answer import NUMERIC_ANSWER_MODES

__all__ = ["main", "build_parser", "ask", "UsageError"]

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
DECODE_MODES = ("eager", "static", "compiled")  # = backends/llm.py DECODE_MODES (torch imported lazily)


class UsageError(ValueError):
    """Bad command-line input (reported as one line, exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from ros2_spatial_mllm.sampling.sources import add_confidence_option

    parser = _Parser(prog="spatial-mllm", description="Spatial questions about videos (Spatial-MLLM).")
    parser.add_argument("--debug", action="store_true", help="print tracebacks on errors")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)
    ask_parser = commands.add_parser("ask", help="answer one question about a video or image folder")
    ask_parser.add_argument("--video", required=True, help="video file (OpenCV) or folder of images")
    ask_parser.add_argument("--question", required=True, help="the question")
    ask_parser.add_argument("--options", nargs="+", default=None, metavar="OPTION",
                            help='multiple-choice options, bare or lettered ("A. chair" "B. table")')
    source = ask_parser.add_mutually_exclusive_group()
    source.add_argument("--model", default=None, help="local Spatial-MLLM checkpoint directory")
    source.add_argument("--preset", default="tiny", choices=["tiny"],
                        help="embedded preset used when --model is not given (default: tiny)")
    ask_parser.add_argument("--sampling", default="space_aware", choices=["space_aware", "uniform"],
                            help="frame selection (default: space_aware)")
    add_confidence_option(ask_parser)
    ask_parser.add_argument("--num-frames", type=_positive_int, default=16,
                            help="frames given to the model (default: 16, as the paper)")
    ask_parser.add_argument("--allow-fewer-frames", action="store_true",
                            help="use all frames when the input has fewer than --num-frames "
                                 "(default: error)")
    ask_parser.add_argument("--max-candidates", type=_positive_int, default=128,
                            help="candidate frames pre-selected by linspace (default: 128)")
    ask_parser.add_argument("--fps", type=_positive_float, default=None,
                            help="frame rate for timestamps (default: the video's; 1.0 for folders)")
    ask_parser.add_argument("--max-side", type=_positive_int, default=640,
                            help="downscale frames whose longer side exceeds this (default: 640)")
    ask_parser.add_argument("--depth", default=None, metavar="DIR",
                            help="folder of depth images, one per video frame (uint16 mm or float m): "
                                 "space-aware sampling from sensor depth + --camera instead of the model heads")
    ask_parser.add_argument("--camera", default=None, metavar="JSON",
                            help="with --depth: JSON with intrinsics [3,3] (or one per frame, for the depth "
                                 "images) and world_from_camera [N,4,4] or camera_from_world [N,3|4,4]; "
                                 "optional depth_scale (default 0.001 for uint16 images)")
    ask_parser.add_argument("--max-new-tokens", type=_positive_int, default=32,
                            help="generation limit (default: 32)")
    ask_parser.add_argument("--unit", default=None,
                            help="canonical unit for numeric answers: m, cm or m² (default: as written)")
    ask_parser.add_argument("--report", default=None, metavar="PATH",
                            help="also write a one-page report of this query: PATH's stem + .html and .png "
                                 "(chosen frames with stamps, question, options, answer)")
    ask_parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                            help="print tracebacks on errors")
    ask_parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    ask_parser.add_argument("--dtype", default=None, help="model dtype, e.g. float32, bfloat16")
    ask_parser.add_argument("--backend", default="torch", choices=("torch", "onnxruntime", "tensorrt"),
                            help="runtime of the encoders and connector (default: torch)")
    ask_parser.add_argument("--onnx-dir", default="",
                            help="exported ONNX folder (spatial-mllm-engines export), for onnxruntime/tensorrt")
    ask_parser.add_argument("--engine-cache-dir", default="", help="TensorRT engine cache folder")
    ask_parser.add_argument("--engine-precision", default="fp16", help="TensorRT engine precision (default: fp16)")
    ask_parser.add_argument("--allow-engine-build", action="store_true",
                            help="build a missing TensorRT engine now (minutes) instead of failing")
    ask_parser.add_argument("--decode-mode", default="eager", choices=DECODE_MODES,
                            help="LLM decode path: eager (dynamic KV cache, default), static (static KV "
                                 "cache), compiled (static + torch.compile CUDA graphs; CUDA devices only)")
    ask_parser.add_argument("--numeric-answers", default="expected_mra", choices=NUMERIC_ANSWER_MODES,
                            help="numeric replies: expected_mra (the number with the highest expected relative "
                                 "accuracy under the model, default) or greedy (digit by digit)")
    return parser


def _quiet_opencv() -> None:
    """Keep OpenCV/FFmpeg from printing multi-line logs for unreadable files."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    import cv2

    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:  # pragma: no cover - older OpenCV builds
        pass


def ask(args: argparse.Namespace) -> dict:
    """Run the `ask` command; returns the JSON-ready result. Raises on bad input."""
    from ros2_spatial_mllm.parsing import canonical_unit, parse_answer
    from ros2_spatial_mllm.prompts import build_prompt
    from ros2_spatial_mllm.video import read_frames

    timings = {}
    start = time.perf_counter()
    build_prompt(args.question, args.options)  # validates question and options before heavy work
    if args.unit is not None:
        canonical_unit(args.unit)
    if args.decode_mode == "compiled" and not str(args.device).lower().startswith("cuda"):
        raise UsageError(f"--decode-mode compiled needs a CUDA --device (torch.compile CUDA graphs), got "
                         f"{args.device!r}; use --decode-mode static or eager on CPU")
    if args.model is not None and not os.path.isdir(os.path.expanduser(args.model)):
        raise UsageError(f"--model must be a local checkpoint directory, not found: {args.model}")

    lap = time.perf_counter()
    clip = read_frames(args.video, max_candidates=args.max_candidates, fps=args.fps, max_side=args.max_side)
    timings["read_video"] = (time.perf_counter() - lap) * 1000.0
    num_frames = args.num_frames
    if len(clip) < num_frames:
        if not args.allow_fewer_frames:
            raise UsageError(f"{args.video} has {clip.total_frames} frame(s) (candidates: {len(clip)}), fewer "
                             f"than --num-frames {num_frames}; lower --num-frames or pass --allow-fewer-frames")
        num_frames = len(clip)
    sensor = _sensor_geometry(args, clip) if args.depth or args.camera else None

    lap = time.perf_counter()
    import torch

    from ros2_spatial_mllm.inference import SpatialMLLM
    from ros2_spatial_mllm.sampling import window_slots

    try:
        torch.device(args.device)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device: not a torch device: {args.device!r} (e.g. cpu, cuda, cuda:0)") from None

    if args.backend != "torch" and not args.onnx_dir:
        raise UsageError(f"--backend {args.backend} needs --onnx-dir (spatial-mllm-engines export)")
    model = SpatialMLLM.load(args.model, preset=args.preset, device=args.device, dtype=args.dtype,
                             backend=args.backend,
                             backend_options={"onnx_dir": args.onnx_dir, "engine_cache_dir": args.engine_cache_dir,
                                              "engine_precision": args.engine_precision,
                                              "allow_engine_build": args.allow_engine_build},
                             decode_mode=args.decode_mode, numeric_answers=args.numeric_answers)
    timings["load_model"] = (time.perf_counter() - lap) * 1000.0
    try:
        from ros2_spatial_mllm import sampling

        if args.sampling == "space_aware":
            lap = time.perf_counter()
            prediction = model.predict_geometry(clip.frames) if sensor is None else None
            timings["geometry"] = (time.perf_counter() - lap) * 1000.0 if sensor is None else 0.0
            lap = time.perf_counter()
            if sensor is None:
                voxels = sampling.frame_voxels_from_prediction(prediction,
                                                               global_percentile=args.confidence == "batch")
            else:
                voxels = [sampling.frame_voxels_from_depth(d, k, world_from_camera=pose, depth_scale=scale)
                          for d, k, pose, scale in sensor]
            timings["voxelize"] = (time.perf_counter() - lap) * 1000.0
            lap = time.perf_counter()
            selection = sampling.space_aware_sample(voxels, num_frames, timestamps=clip.timestamps)
            timings["pick"] = (time.perf_counter() - lap) * 1000.0
        else:
            lap = time.perf_counter()
            selection = sampling.SamplingResult(sampling.uniform_sample(len(clip), num_frames), method="uniform")
            selection.pick_order = list(selection.indices)
            timings.update(geometry=0.0, voxelize=0.0, pick=(time.perf_counter() - lap) * 1000.0)
        timings["sampling"] = timings["geometry"] + timings["voxelize"] + timings["pick"]
        chosen = clip.subset(selection.indices)
        slots = window_slots(chosen.timestamps, clip.timestamps[0], clip.timestamps[-1])
        result = model.answer(list(chosen.frames), args.question, args.options,
                              max_new_tokens=args.max_new_tokens, frame_slots=slots)
        info = model.info
    finally:
        model.close()
    parsed = parse_answer(result.text, args.options, unit=args.unit)
    timings.update({f"model_{key}": value for key, value in result.timings_ms.items()})
    timings["total"] = (time.perf_counter() - start) * 1000.0
    out = {
        "question": args.question.strip(),
        "options": args.options,
        "answer": result.text,
        "parsed": {"kind": parsed.kind, "choice": parsed.choice, "value": parsed.value,
                   "unit": parsed.unit, "text": parsed.text},
        "num_tokens": result.num_tokens,
        "frames": {"indices": chosen.indices, "timestamps_s": [round(t, 6) for t in chosen.timestamps],
                   "candidates": len(clip), "total": clip.total_frames, "fps": clip.fps, "source": clip.source},
        "sampling": {"method": args.sampling,
                     "geometry": None if args.sampling != "space_aware" else ("sensor" if sensor else "model"),
                     "confidence": args.confidence if args.sampling == "space_aware" and not sensor else None,
                     "coverage": selection.coverage,
                     "voxel_size": selection.voxel_size, "num_voxels": selection.num_voxels,
                     "gains": selection.gains},
        "model": {key: info.get(key) for key in ("preset", "model_dir", "revision", "params", "device", "dtype",
                                                 "decode_mode", "numeric_answers")},
        "timings_ms": {key: round(value, 3) for key, value in timings.items()},
    }
    if args.report:
        from ros2_spatial_mllm.report import write_query_report

        # selection.indices are positions in clip.frames (the candidates), as write_query_report expects
        try:
            paths = write_query_report(os.path.expanduser(args.report), clip.frames, list(selection.indices),
                                       clip.timestamps, args.question, args.options, out)
        except OSError as exc:
            raise UsageError(f"--report: cannot write {args.report}: {exc.strerror or exc}") from None
        out["report"] = {"html": str(paths.html), "png": str(paths.png), "tiles": paths.tiles}
    return out


def _sensor_geometry(args: argparse.Namespace, clip) -> list:
    """--depth/--camera -> [(depth [H,W], intrinsics [3,3], world_from_camera [4,4], depth_scale)]
    for the clip's candidate frames. Raises UsageError/VideoInputError on inconsistent input."""
    import numpy as np

    from ros2_spatial_mllm.video import read_depth_images

    if not (args.depth and args.camera):
        raise UsageError("--depth and --camera go together")
    try:
        with open(os.path.expanduser(args.camera), encoding="utf-8") as handle:
            camera = json.load(handle)
    except OSError as exc:
        raise UsageError(f"--camera: cannot read {args.camera}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"--camera: {args.camera} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(camera, dict) or "intrinsics" not in camera:
        raise UsageError(f"--camera: {args.camera} needs an 'intrinsics' entry")
    try:
        intrinsics = np.asarray(camera["intrinsics"], np.float64)
        if "world_from_camera" in camera:
            poses = np.asarray(camera["world_from_camera"], np.float64)
        elif "camera_from_world" in camera:
            from ros2_spatial_mllm.geometry import invert_extrinsics, to_homogeneous

            poses = invert_extrinsics(to_homogeneous(np.asarray(camera["camera_from_world"], np.float64)))
        else:
            raise UsageError(f"--camera: {args.camera} needs 'world_from_camera' or 'camera_from_world'")
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--camera: malformed matrices in {args.camera}: {exc}") from None
    if poses.ndim != 3 or poses.shape[1:] not in ((4, 4), (3, 4)) or len(poses) != clip.total_frames:
        raise UsageError(f"--camera: expected {clip.total_frames} poses of shape 4x4, got {poses.shape}")
    if intrinsics.shape == (3, 3):
        intrinsics = np.broadcast_to(intrinsics, (clip.total_frames, 3, 3))
    if intrinsics.shape != (clip.total_frames, 3, 3):
        raise UsageError(f"--camera: intrinsics must be 3x3 or {clip.total_frames}x3x3, got {intrinsics.shape}")
    depths = read_depth_images(args.depth, clip.indices, expected_count=clip.total_frames)
    scale = camera.get("depth_scale")
    return [(d, intrinsics[i], poses[i], float(scale) if scale is not None else
             (0.001 if d.dtype == np.uint16 else 1.0)) for d, i in zip(depths, clip.indices)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point (`spatial-mllm`). Returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        _quiet_opencv()
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise UsageError("missing command; try `spatial-mllm ask --help`")
        output = ask(args)
        print(json.dumps(output, ensure_ascii=False))
        return EXIT_OK
    except SystemExit as exc:  # --help / --version from argparse
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_OK
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UsageError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # noqa: BLE001 - top level: never a traceback without --debug
        if debug:
            traceback.print_exc()
        print(f"error: internal failure ({type(exc).__name__}): {_one_line(exc)}; rerun with --debug",
              file=sys.stderr)
        return EXIT_INTERNAL


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:500]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

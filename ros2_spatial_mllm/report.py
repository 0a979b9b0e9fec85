"""One-page report per query: the chosen frames in a strip with their stamps, the question, the
options, the answer, its parsed value, coverage and latency. Self-contained HTML (frames embedded
as JPEG data URIs, opens in any browser, no network) + a PNG of the same content (OpenCV).

    from ros2_spatial_mllm.report import write_query_report
    paths = write_query_report("out/q1.html", clip.frames, selection.indices, clip.timestamps,
                               question, options, result_dict)
    paths.html, paths.png, paths.tiles

Tiny CPU run (no model):
    python -c "import numpy as np; from ros2_spatial_mllm.report import write_query_report as w; \
print(w('/tmp/q.html', [np.zeros((48,64,3),np.uint8)]*4, [0,2], [0.0,0.5,1.0,1.5], 'How far?', None, \
{'answer':'2.5','coverage':0.8}))"

Inputs:
  frames   : sequence of [H, W, 3] uint8 RGB (the candidates, or only the chosen ones)
  indices  : positions in ``frames`` of the chosen frames (None = all frames), any order
  stamps   : one stamp per frame: seconds (float) or integer nanoseconds (ints > 1e12 are taken
             as ns); None = no stamps
  result   : dict (or dataclass) with any of: answer/text, parsed {kind, choice, value, unit} or a
             ParsedAnswer, coverage or sampling.coverage, latency_ms/timings_ms, num_tokens, code
             /error_code, message/error_message, sampling (name or dict), model {...}
PNG layout (``ReportLayout``): a text header, then tiles of TILE_W x TILE_H (each frame resized
to fit, aspect kept, on a dark background) with a LABEL_H caption under each, at most MAX_COLS
per row. No rclpy, no torch.
"""
from __future__ import annotations

import base64
import dataclasses
import html
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

__all__ = ["write_query_report", "ReportPaths", "ReportLayout", "report_layout", "TILE_W", "TILE_H",
           "LABEL_H", "PAD", "MAX_COLS"]

TILE_W, TILE_H, LABEL_H, PAD, MAX_COLS = 240, 180, 22, 8, 8
LINE_H, WRAP = 22, 110
_BG, _TILE_BG, _FG = (255, 255, 255), (40, 40, 40), (20, 20, 20)


@dataclass
class ReportLayout:
    """Pixel geometry of the PNG: size and one (x, y, w, h) box per tile (image area only)."""

    width: int
    height: int
    header_h: int
    tiles: list[tuple[int, int, int, int]]


@dataclass
class ReportPaths:
    html: Path
    png: Path
    layout: ReportLayout

    @property
    def tiles(self) -> int:
        return len(self.layout.tiles)


def report_layout(num_tiles: int, num_text_lines: int) -> ReportLayout:
    """Geometry for ``num_tiles`` frames under a header of ``num_text_lines`` lines."""
    cols = max(1, min(MAX_COLS, num_tiles))
    rows = max(1, math.ceil(num_tiles / cols)) if num_tiles else 0
    header_h = PAD + num_text_lines * LINE_H + PAD
    width = PAD + cols * (TILE_W + PAD)
    height = header_h + rows * (TILE_H + LABEL_H + PAD) + PAD
    tiles = [(PAD + (i % cols) * (TILE_W + PAD), header_h + (i // cols) * (TILE_H + LABEL_H + PAD), TILE_W, TILE_H)
             for i in range(num_tiles)]
    return ReportLayout(width, height, header_h, tiles)


def _as_dict(result: Any) -> dict:
    if result is None:
        return {}
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        out = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
        for name in ("success", "answer_kind", "value", "choice"):   # QueryResponse properties
            if hasattr(type(result), name):
                out.setdefault(name, getattr(result, name))
        return out
    return dict(result)


def _parsed_text(parsed: Any) -> str:
    if parsed is None:
        return ""
    if dataclasses.is_dataclass(parsed):
        parsed = {f.name: getattr(parsed, f.name) for f in dataclasses.fields(parsed)}
    if isinstance(parsed, dict):
        kind = parsed.get("kind", "")
        if kind == "choice" and parsed.get("choice"):
            return f"choice {parsed['choice']}"
        if kind == "number" and parsed.get("value") is not None:
            unit = parsed.get("unit") or ""
            return f"number {parsed['value']:g}{(' ' + unit) if unit else ''}"
        return f"{kind or 'text'}: {parsed.get('text', '')}".strip()
    return str(parsed)


def _summary(question: str, options: Sequence[str] | None, result: dict) -> list[tuple[str, str]]:
    """(label, value) rows shared by the HTML table and the PNG header."""
    answer = result.get("answer", result.get("text", ""))
    sampling = result.get("sampling")
    coverage = result.get("coverage")
    if coverage is None and isinstance(sampling, dict):
        coverage = sampling.get("coverage")
    latency = result.get("latency_ms") or result.get("timings_ms") or {}
    total = latency.get("total_ms", latency.get("total")) if isinstance(latency, dict) else None
    code = result.get("code", result.get("error_code"))
    rows = [("question", question)]
    if options:
        rows.append(("options", "  ".join(f"{chr(65 + i)}. {o}" for i, o in enumerate(options))))
    rows.append(("answer", str(answer)))
    parsed = _parsed_text(result.get("parsed"))
    if parsed:
        rows.append(("parsed", parsed))
    if code is not None and int(code) != 0:
        rows.append(("error", f"{getattr(code, 'name', code)}: {result.get('message', result.get('error_message', ''))}"))
    if coverage is not None:
        rows.append(("coverage", f"{float(coverage):.3f}"))
    if isinstance(sampling, dict) and sampling.get("method"):
        rows.append(("sampling", str(sampling["method"])))
    elif isinstance(sampling, str) and sampling:
        rows.append(("sampling", sampling))
    if total is not None:
        rows.append(("latency", f"{float(total):.1f} ms total"))
    if result.get("num_tokens") is not None:
        rows.append(("tokens", str(result["num_tokens"])))
    return rows


def _stamp_seconds(stamp) -> float:
    if isinstance(stamp, (int, np.integer)) and abs(int(stamp)) > 10**12:
        return int(stamp) * 1e-9
    return float(stamp)


def _fit(frame: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 RGB -> [TILE_H, TILE_W, 3] letterboxed."""
    frame = np.ascontiguousarray(frame)
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    h, w = frame.shape[:2]
    scale = min(TILE_W / w, TILE_H / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    tile = np.full((TILE_H, TILE_W, 3), _TILE_BG, np.uint8)
    y0, x0 = (TILE_H - nh) // 2, (TILE_W - nw) // 2
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    tile[y0:y0 + nh, x0:x0 + nw] = cv2.resize(frame[..., :3], (nw, nh), interpolation=interp)
    return tile


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


def _render_png(tiles: list[np.ndarray], captions: list[str], rows: list[tuple[str, str]]) -> tuple[np.ndarray, ReportLayout]:
    lines = []
    for label, value in rows:
        wrapped = textwrap.wrap(_ascii(f"{label}: {value}"), WRAP) or [f"{label}:"]
        lines.extend(wrapped[:4])
    layout = report_layout(len(tiles), len(lines))
    canvas = np.full((layout.height, layout.width, 3), _BG, np.uint8)   # RGB
    for i, line in enumerate(lines):
        cv2.putText(canvas, line, (PAD, PAD + (i + 1) * LINE_H - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.5, _FG, 1,
                    cv2.LINE_AA)
    for (x, y, w, h), tile, caption in zip(layout.tiles, tiles, captions):
        canvas[y:y + h, x:x + w] = tile
        cv2.putText(canvas, _ascii(caption), (x + 2, y + h + LABEL_H - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, _FG, 1,
                    cv2.LINE_AA)
    return canvas, layout


def _data_uri(frame: np.ndarray) -> str:
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(frame[..., :3]), cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ValueError(f"could not encode a frame of shape {frame.shape} as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(jpeg.tobytes()).decode("ascii")


def _render_html(frames: list[np.ndarray], captions: list[str], rows: list[tuple[str, str]], result: dict,
                 png_name: str) -> str:
    esc = html.escape
    table = "\n".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    figures = "\n".join(
        f'<figure><img src="{_data_uri(f)}" width="{TILE_W}" alt="{esc(c)}"><figcaption>{esc(c)}</figcaption></figure>'
        for f, c in zip(frames, captions))
    latency = result.get("latency_ms") or result.get("timings_ms") or {}
    lat_rows = "".join(f"<tr><th>{esc(str(k))}</th><td>{float(v):.1f}</td></tr>"
                       for k, v in latency.items() if isinstance(v, (int, float)))
    lat_table = f"<h2>Latency (ms)</h2><table>{lat_rows}</table>" if lat_rows else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Spatial query: {esc(rows[0][1][:80])}</title>
<style>body{{font-family:sans-serif;margin:16px}} th{{text-align:left;padding-right:12px;vertical-align:top}}
.strip{{display:flex;flex-wrap:wrap;gap:8px}} figure{{margin:0}} figcaption{{font-size:12px}}</style></head>
<body>
<h1>Spatial query report</h1>
<table class="summary">
{table}
</table>
<h2>Frames used ({len(frames)})</h2>
<div class="strip">
{figures}
</div>
{lat_table}
<p><a href="{esc(png_name)}">PNG version</a></p>
</body></html>
"""


def write_query_report(out_path: str | Path, frames: Sequence[np.ndarray], indices: Sequence[int] | None,
                       stamps: Sequence[float | int] | None, question: str, options: Sequence[str] | None,
                       result_dict: Any) -> ReportPaths:
    """Write ``<stem>.html`` and ``<stem>.png`` next to ``out_path`` (its suffix is ignored).

    Raises ValueError for an index outside ``frames`` or stamps of the wrong length.
    """
    out_path = Path(out_path)
    html_path, png_path = out_path.with_suffix(".html"), out_path.with_suffix(".png")
    chosen = list(range(len(frames))) if indices is None else sorted(int(i) for i in indices)
    bad = [i for i in chosen if not 0 <= i < len(frames)]
    if bad:
        raise ValueError(f"frame indices {bad[:5]} outside 0..{len(frames) - 1}")
    if stamps is not None and len(stamps) not in (len(frames), len(chosen)):
        raise ValueError(f"{len(stamps)} stamps for {len(frames)} frames ({len(chosen)} chosen)")
    picked = [np.asarray(frames[i]) for i in chosen]
    captions = []
    for n, i in enumerate(chosen):
        text = f"#{i}"
        if stamps is not None:
            stamp = stamps[i] if len(stamps) == len(frames) else stamps[n]
            text += f"  t={_stamp_seconds(stamp):.3f}s"
        captions.append(text)
    result = _as_dict(result_dict)
    rows = _summary(str(question), list(options) if options else None, result)
    canvas, layout = _render_png([_fit(f) for f in picked], captions, rows)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(png_path), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {png_path}")
    html_path.write_text(_render_html(picked, captions, rows, result, png_path.name), encoding="utf-8")
    return ReportPaths(html_path, png_path, layout)

"""Per-query report (ros2_spatial_mllm/report.py): HTML + PNG written, PNG decodes with the
expected size and one tile per chosen frame, HTML carries the question/answer and embeds the frames."""
from __future__ import annotations

import base64
import html
import re

import cv2
import numpy as np
import pytest

from ros2_spatial_mllm.parsing import ParsedAnswer
from ros2_spatial_mllm.query_engine import ErrorCode, QueryResponse
from ros2_spatial_mllm.report import LABEL_H, MAX_COLS, TILE_H, TILE_W, report_layout, write_query_report

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200),
           (200, 30, 200), (120, 60, 10), (10, 60, 120), (250, 140, 0), (90, 90, 90)]


def _frames(n: int = 10, h: int = 48, w: int = 64) -> list[np.ndarray]:
    return [np.full((h, w, 3), COLOURS[i % len(COLOURS)], np.uint8) for i in range(n)]


def _tile_colours(png: np.ndarray, layout) -> list[tuple[int, ...]]:
    """RGB colour at the centre of every tile box."""
    return [tuple(int(c) for c in png[y + h // 2, x + w // 2]) for x, y, w, h in layout.tiles]


def test_png_and_html_for_chosen_frames(tmp_path):
    frames = _frames()
    stamps_ns = [1_760_000_000 * 10**9 + i * 250_000_000 for i in range(10)]
    question = "How far is the <chair> from the door? (Küche)"
    result = {"answer": "B", "parsed": {"kind": "choice", "choice": "B", "value": None, "unit": None, "text": "B"},
              "coverage": 0.8125, "latency_ms": {"queue_ms": 1.0, "decode_ms": 20.5, "total_ms": 123.4},
              "num_tokens": 1, "sampling": "space_aware"}
    paths = write_query_report(tmp_path / "q1.png", frames, [7, 2, 4], stamps_ns, question, ["1 m", "2 m"], result)
    assert paths.html == tmp_path / "q1.html" and paths.png == tmp_path / "q1.png" and paths.tiles == 3

    png = cv2.cvtColor(cv2.imread(str(paths.png), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    layout = paths.layout
    assert png.shape == (layout.height, layout.width, 3)
    assert layout.width == 8 + 3 * (TILE_W + 8) and layout.height == layout.header_h + TILE_H + LABEL_H + 16
    # 4:3 frames fill their tile exactly, in time order (chosen indices sorted)
    assert _tile_colours(png, layout) == [COLOURS[2], COLOURS[4], COLOURS[7]]
    x, y, w, h = layout.tiles[0]
    assert np.abs(png[y:y + h, x:x + w].astype(int) - COLOURS[2]).max() <= 1

    text = paths.html.read_text(encoding="utf-8")
    assert html.escape(question) in text and "<chair>" not in text
    for needle in ("A. 1 m", "B. 2 m", "choice B", "0.812", "123.4 ms total", "q1.png"):
        assert needle in text, needle
    uris = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', text)
    assert len(uris) == 3
    first = cv2.imdecode(np.frombuffer(base64.b64decode(uris[0]), np.uint8), cv2.IMREAD_COLOR)
    assert first.shape == (48, 64, 3)
    assert np.abs(first[24, 32][::-1].astype(int) - COLOURS[2]).max() < 12       # BGR -> RGB
    # stamps shown in seconds, with the frame index
    assert "#2  t=1760000000.500s" in text and "#7  t=1760000001.750s" in text


def test_many_frames_wrap_into_rows_and_query_response_is_accepted(tmp_path):
    frames = _frames(10, 90, 160)   # 16:9 -> letterboxed
    response = QueryResponse(ErrorCode.OK, "", "3", ParsedAnswer(kind="number", choice=None, value=3.0, unit=None, text="3"),
                             frame_stamps_ns=list(range(10)), coverage=1.0, num_tokens=2)
    paths = write_query_report(tmp_path / "r", frames, None, [i * 0.5 for i in range(10)],
                               "How many boxes?", None, response)
    png = cv2.imread(str(paths.png), cv2.IMREAD_COLOR)
    assert paths.tiles == 10
    assert paths.layout == report_layout(10, paths.layout.header_h and
                                         (paths.layout.header_h - 16) // 22)
    assert png.shape[1] == 8 + MAX_COLS * (TILE_W + 8)
    assert len({y for _, y, _, _ in paths.layout.tiles}) == 2
    tiles = [tuple(int(c) for c in png[y + h // 2, x + w // 2][::-1]) for x, y, w, h in paths.layout.tiles]
    assert tiles == COLOURS
    x, y, w, h = paths.layout.tiles[0]
    assert tuple(png[y + 2, x + w // 2]) == (40, 40, 40)    # letterbox band above a 16:9 frame
    assert "number 3" in paths.html.read_text()


def test_error_result_and_bad_inputs(tmp_path):
    paths = write_query_report(tmp_path / "e.html", _frames(2), [], None, "q?", None,
                               {"error_code": 2, "error_message": "no frame in window", "answer": ""})
    text = paths.html.read_text()
    assert "no frame in window" in text and paths.tiles == 0
    assert cv2.imread(str(paths.png)) is not None
    with pytest.raises(ValueError, match="outside"):
        write_query_report(tmp_path / "x", _frames(2), [5], None, "q", None, {})
    with pytest.raises(ValueError, match="stamps"):
        write_query_report(tmp_path / "x", _frames(3), [0, 1], [0.0], "q", None, {})

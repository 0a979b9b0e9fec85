"""Training metrics: a CSV written as it goes, and a PNG of the curves drawn with OpenCV
(already a dependency; no matplotlib needed).

    log = MetricsLog(out_dir / "metrics.csv")
    log.log(step=10, loss=1.2, lr=7e-6)        # rewrites the CSV (small files; safe on resume)
    log.plot(out_dir / "curves.png", keys=["loss", "lr"])
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np


class MetricsLog:
    """Rows of {column: value} keyed by `step`; resuming truncates rows after the resume step."""

    def __init__(self, path: str | Path, resume_step: int | None = None):
        self.path = Path(path)
        self.rows: list[dict] = []
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="") as fh:
                for row in csv.DictReader(fh):
                    parsed = {k: _num(v) for k, v in row.items() if v not in ("", None)}
                    if parsed.get("step", 0) <= resume_step:
                        self.rows.append(parsed)

    def log(self, **values) -> None:
        self.rows.append({k: (float(v) if isinstance(v, (int, float, np.floating)) else v) for k, v in values.items()})
        self.write()

    def write(self) -> None:
        cols: list[str] = []
        for row in self.rows:
            cols += [k for k in row if k not in cols]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=cols)
            writer.writeheader()
            for row in self.rows:
                writer.writerow(row)
        tmp.replace(self.path)

    def series(self, key: str) -> tuple[list[float], list[float]]:
        xs, ys = [], []
        for row in self.rows:
            v = row.get(key)
            if isinstance(v, (int, float)) and math.isfinite(v):
                xs.append(float(row.get("step", len(xs))))
                ys.append(float(v))
        return xs, ys

    def plot(self, path: str | Path, keys: Sequence[str] | None = None, title: str = "") -> Path:
        if keys is None:
            keys = [k for k in (self.rows[0] if self.rows else {}) if k not in ("step", "epoch", "stage")]
        series = {k: self.series(k) for k in keys}
        return plot_curves(path, {k: v for k, v in series.items() if v[0]}, title=title)


def _num(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def plot_curves(path: str | Path, series: dict[str, tuple[list[float], list[float]]], title: str = "",
                panel_hw: tuple[int, int] = (240, 360)) -> Path:
    """One panel per series (x = step), laid out in a grid; writes a PNG and returns its path."""
    path = Path(path)
    names = list(series) or ["(no data)"]
    cols = min(3, len(names))
    rows = int(math.ceil(len(names) / cols))
    ph, pw = panel_hw
    canvas = np.full((rows * ph + 30, cols * pw, 3), 255, np.uint8)
    cv2.putText(canvas, title[:80], (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    for i, name in enumerate(names):
        r, c = divmod(i, cols)
        _panel(canvas[30 + r * ph: 30 + (r + 1) * ph, c * pw:(c + 1) * pw], name, *series.get(name, ([], [])))
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), canvas)
    return path


def _panel(img: np.ndarray, name: str, xs: Iterable[float], ys: Iterable[float]) -> None:
    """Draw one line chart with min/max labels into `img` [h, w, 3] (in place)."""
    xs, ys = np.asarray(list(xs), float), np.asarray(list(ys), float)
    h, w = img.shape[:2]
    left, right, top, bottom = 50, 10, 22, 22
    cv2.rectangle(img, (left, top), (w - right, h - bottom), (180, 180, 180), 1)
    cv2.putText(img, name[:40], (left, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    if xs.size == 0:
        return
    x0, x1 = xs.min(), xs.max() if xs.max() > xs.min() else xs.min() + 1
    y0, y1 = ys.min(), ys.max() if ys.max() > ys.min() else ys.min() + 1e-9
    px = left + (xs - x0) / (x1 - x0) * (w - left - right)
    py = (h - bottom) - (ys - y0) / (y1 - y0) * (h - top - bottom)
    pts = np.stack([px, py], 1).round().astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(img, [pts], False, (200, 80, 20), 1, cv2.LINE_AA)
    if len(pts) <= 40:
        for p in pts[:, 0]:
            cv2.circle(img, (int(p[0]), int(p[1])), 2, (200, 80, 20), -1)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, f"{y1:.3g}", (2, top + 8), font, 0.33, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.putText(img, f"{y0:.3g}", (2, h - bottom), font, 0.33, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.putText(img, f"step {x0:.0f}", (left, h - 6), font, 0.33, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.putText(img, f"{x1:.0f}", (w - right - 30, h - 6), font, 0.33, (60, 60, 60), 1, cv2.LINE_AA)

"""Per-task result tables (Markdown + JSON) and a bar chart PNG (matplotlib, Agg backend)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional


def markdown_table(summary: Dict, title: str = "Results") -> str:
    """Markdown: one row per task (n, score in %), then the VSI-Bench and MultiSPA overall rows."""
    lines = [f"### {title}", "", "| task | family | n | score (%) |", "|---|---|---:|---:|"]
    for task, row in summary["tasks"].items():
        lines.append(f"| {task} | {row['family']} | {row['n']} | {100 * row['score']:.1f} |")
    vsi = summary["vsibench"]
    if vsi["tasks"]:
        lines.append(f"| object_rel_direction (easy/medium/hard averaged) | vsibench | | "
                     f"{100 * vsi['tasks'].get('object_rel_direction', float('nan')):.1f} |")
        note = "" if vsi["complete"] else f" ({len(vsi['tasks'])}/8 tasks present)"
        lines.append(f"| **VSI-Bench overall**{note} | vsibench | | **{100 * vsi['overall']:.1f}** |")
    if summary["multispa"]["overall"] is not None:
        lines.append(f"| **MultiSPA overall** | multispa | | **{100 * summary['multispa']['overall']:.1f}** |")
    return "\n".join(lines) + "\n"


def bar_chart(summary: Dict, path: str | Path, title: str = "Per-task score") -> Path:
    """Horizontal bar chart of per-task scores (%) with the overall figures in the title."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summary["tasks"])
    scores = [100 * summary["tasks"][t]["score"] for t in tasks]
    colors = ["#3b7dd8" if summary["tasks"][t]["family"] == "vsibench" else "#e07b39" for t in tasks]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(tasks) + 1.5))
    ax.barh(tasks, scores, color=colors)
    ax.set_xlim(0, 100)
    ax.set_xlabel("score (%)")
    ax.invert_yaxis()
    parts = []
    if summary["vsibench"]["overall"] is not None:
        parts.append(f"VSI-Bench {100 * summary['vsibench']['overall']:.1f}")
    if summary["multispa"]["overall"] is not None:
        parts.append(f"MultiSPA {100 * summary['multispa']['overall']:.1f}")
    ax.set_title(title + (" — " + ", ".join(parts) if parts else ""))
    for y, s in enumerate(scores):
        ax.text(min(s + 1, 92), y, f"{s:.1f}", va="center", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_tables(summary: Dict, out_dir: str | Path, title: str = "Results", extra: Optional[Dict] = None) -> Dict[str, str]:
    """Write results.md, results.json and results.png into ``out_dir``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "results.md"
    md.write_text(markdown_table(summary, title))
    js = out / "results.json"
    js.write_text(json.dumps({**summary, **(extra or {})}, indent=1))
    png = bar_chart(summary, out / "results.png", title)
    return {"markdown": str(md), "json": str(js), "chart": str(png)}

"""PNG curves from a metrics CSV (matplotlib's Agg canvas, no pyplot state)."""

from __future__ import annotations

import csv
import os
from pathlib import Path


def plot_curves(csv_path: str | os.PathLike, out_path: str | os.PathLike, metric: str) -> Path | None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    csv_path, out_path = Path(csv_path), Path(out_path)
    if not csv_path.exists():
        return None
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))

    def series(key: str) -> tuple[list[int], list[float]]:
        pts = [(int(float(r["step"])), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig = Figure(figsize=(10, 4), dpi=110)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    steps, loss = series("loss")
    ax1.plot(steps, loss, lw=1.2, label="total loss")
    for key in sorted(k for k in (rows[0] if rows else {}) if k not in ("step", "lr", "loss", "images_per_s")
                      and not k.startswith("val_")):
        s, v = series(key)
        if v:
            ax1.plot(s, v, lw=0.8, alpha=0.7, label=key)
    ax1.set_xlabel("step")
    ax1.set_ylabel("loss")
    ax1.set_yscale("log")
    ax1.legend(fontsize=8)
    ax1.set_title("training loss")
    s, v = series(f"val_{metric}")
    ax2.plot(s, v, "o-", color="C3")
    ax2.set_xlabel("step")
    ax2.set_ylabel(metric)
    ax2.set_title(f"validation {metric}")
    ax2.set_ylim(0, 1)
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp.png")
    fig.savefig(tmp)
    os.replace(tmp, out_path)
    return out_path

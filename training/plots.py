"""Training curves: a PNG of every numeric column of a run's log.csv against the step."""
from __future__ import annotations

import csv
import math
import os
from typing import Dict, List, Optional, Sequence


def read_log(path: str) -> Dict[str, List[tuple]]:
    """column -> [(step, value)] for every non-empty numeric cell."""
    series: Dict[str, List[tuple]] = {}
    with open(path) as fh:
        for row in csv.DictReader(fh):
            step = int(row["step"])
            for key, value in row.items():
                if key in ("step", "seconds") or value in ("", None):
                    continue
                try:
                    series.setdefault(key, []).append((step, float(value)))
                except ValueError:
                    continue
    return series


def plot_run(run_dir: str, out: Optional[str] = None, columns: Optional[Sequence[str]] = None,
             log_scale: Sequence[str] = ()) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_log(os.path.join(run_dir, "log.csv"))
    names = [c for c in (columns or series) if c in series]
    if not names:
        raise ValueError(f"{run_dir}/log.csv has no numeric columns to plot")
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        steps, values = zip(*series[name])
        ax.plot(steps, values, lw=1)
        if name in log_scale and min(values) > 0:
            ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(os.path.basename(os.path.abspath(run_dir)), fontsize=10)
    fig.tight_layout()
    out = out or os.path.join(run_dir, "curves.png")
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out

"""PNG plots of a results folder, and a comparison of several (matplotlib, no display needed)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def load_metrics(run_dir: Path) -> dict:
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a results folder?")
    return json.loads(path.read_text())


def _matrix(metrics: dict) -> np.ndarray:
    t = metrics["num_tasks"]
    m = np.full((len(metrics["accuracy_matrix"]), t), np.nan)
    for i, row in enumerate(metrics["accuracy_matrix"]):
        m[i, : len(row)] = row
    return m


def plot_run(run_dir: Path) -> list[Path]:
    """Accuracy heat map, average accuracy per task, time breakdown per step; returns the files."""
    run_dir = Path(run_dir)
    metrics = load_metrics(run_dir)
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    files = [_heatmap(metrics, out / "accuracy_matrix.png"), _average(metrics, out / "average_accuracy.png")]
    steps = run_dir / "steps_rank0.csv"
    if steps.is_file():
        files.append(_time_breakdown(steps, out / "time_breakdown.png"))
    return files


def _heatmap(metrics: dict, path: Path) -> Path:
    m = _matrix(metrics)
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * m.shape[1], 1.0 + 0.6 * m.shape[0]))
    percent = 100 * m  # the cells, the title and the colour bar all in %
    im = ax.imshow(percent, vmin=0, vmax=100, cmap="viridis")
    for (i, j), v in np.ndenumerate(percent):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", color="w" if v < 60 else "k", fontsize=8)
    ax.set_xlabel("evaluated on task j")
    ax.set_ylabel("after training task i")
    ax.set_title(f"accuracy (%), {metrics.get('agent', '')}")
    fig.colorbar(im, ax=ax, label="accuracy (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _average(metrics: dict, path: Path) -> Path:
    m = _matrix(metrics)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(np.arange(1, len(m) + 1), 100 * np.nanmean(m, axis=1), marker="o")
    ax.set_xlabel("tasks trained")
    ax.set_ylabel("average accuracy on tasks seen (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _time_breakdown(steps_csv: Path, path: Path) -> Path:
    with steps_csv.open() as f:
        rows = list(csv.DictReader(f))
    tasks = sorted({int(r["task"]) for r in rows})
    parts = ("load_s", "wait_s", "train_s")
    means = {p: [1000 * np.mean([float(r[p]) for r in rows if int(r["task"]) == t]) for t in tasks] for p in parts}
    fig, ax = plt.subplots(figsize=(5, 3.5))
    bottom = np.zeros(len(tasks))
    for p in parts:
        ax.bar([t + 1 for t in tasks], means[p], bottom=bottom, label=p[:-2])
        bottom += np.array(means[p])
    ax.set_xlabel("task")
    ax.set_ylabel("mean time per step (ms), rank 0")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def compare(run_dirs: list[Path], out: Path) -> tuple[Path, str]:
    """One plot (average accuracy after each task, one line per run) and one Markdown table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    lines = ["| run | agent | final avg acc | avg incr acc | forgetting | BWT | wall s |",
             "|---|---|---|---|---|---|---|"]
    for run_dir in map(Path, run_dirs):
        metrics = load_metrics(run_dir)
        m = _matrix(metrics)
        ax.plot(np.arange(1, len(m) + 1), 100 * np.nanmean(m, axis=1), marker="o", label=run_dir.name)
        method = metrics.get("agent", "") + (f" ({metrics['preset']})" if metrics.get("preset") else "")
        lines.append(f"| {run_dir.name} | {method} | {100 * metrics['final_average_accuracy']:.1f} "
                     f"| {100 * metrics['average_incremental_accuracy']:.1f} | {100 * metrics['forgetting']:.1f} "
                     f"| {100 * metrics['backward_transfer']:.1f} | {metrics['wall_time_s']:.1f} |")
    ax.set_xlabel("tasks trained")
    ax.set_ylabel("average accuracy on tasks seen (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    png = out / "comparison.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    table = "\n".join(lines) + "\n"
    (out / "comparison.md").write_text(table)
    return png, table

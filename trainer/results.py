"""The run's results folder: resolved config, metrics as JSON and CSV, step timings, logs.

Layout of one run folder:
  config.yaml              the resolved configuration
  metrics.json             accuracy matrices (top-1, top-5), summary metrics, timings, buffer stats
  accuracy_matrix.csv      A[i][j], top-1, rows = after training task i, columns = task j
  steps_rank{r}.csv        per-step timings of rank r (load / wait / train seconds, samples, loss)
  log_rank{r}.txt          the log of rank r
  tensorboard/             TensorBoard event files (rank 0)
  plots/                   PNG plots (rank 0, end of run)
  checkpoints/             see trainer/checkpoint.py
"""
from __future__ import annotations

import csv
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import yaml

from trainer import metrics

QUIET_LIBRARIES = ("matplotlib", "PIL", "h5py", "fsspec", "urllib3", "tensorboard", "torch._dynamo",
                   "torch._inductor", "numba", "asyncio")


class StepRecord(NamedTuple):
    """One training step of one rank, as steps_rank{r}.csv holds it."""
    task: int
    epoch: int
    step: int
    samples: int      # trained on: new samples and representatives
    load_s: float     # waiting for the data loader
    wait_s: float     # waiting for representatives
    train_s: float    # forward, backward, optimizer step, insertion
    loss: float


def setup_logging(run_dir: Path, rank: int, level: str) -> None:
    """One log file per rank; the console shows rank 0 (and errors from any rank)."""
    root = logging.getLogger()
    root.setLevel(getattr(logging, level.upper()))
    for noisy in QUIET_LIBRARIES:  # --log-level debug is for the trainer, not matplotlib's font search
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    for handler in list(root.handlers):
        root.removeHandler(handler)
    fmt = logging.Formatter(f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s")
    file_handler = logging.FileHandler(run_dir / f"log_rank{rank}.txt")
    file_handler.setFormatter(fmt)
    root.addHandler(file_handler)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter(f"[rank {rank}] %(message)s"))
    console.setLevel(root.level if rank == 0 else logging.ERROR)
    root.addHandler(console)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# The summary numbers of a run (metrics.summary's keys and top-5's): null for a diverged run.
SUMMARY_KEYS = ("final_average_accuracy", "average_incremental_accuracy", "forgetting", "backward_transfer",
                "final_average_accuracy_top5")


class Recorder:
    """Accumulates what a run reports; its state goes into checkpoints."""

    def __init__(self, num_tasks: int, world_size: int):
        self.num_tasks = num_tasks
        self.world_size = world_size
        self.top1: list[list[float]] = []
        self.top5: list[list[float]] = []
        self.evaluations: list[list[dict]] = []
        self.task_stats: list[dict] = []
        self.steps: list[StepRecord] = []
        self.elapsed_before = 0.0  # wall time of earlier (interrupted) attempts
        self.started = time.perf_counter()

    def add_step(self, row: StepRecord) -> None:
        self.steps.append(row)

    def add_evaluation(self, task_index: int, results: list[dict], stats: dict) -> None:
        self.top1.append([r["top1"] for r in results])
        self.top5.append([r["top5"] for r in results])
        self.evaluations.append(results)
        self.task_stats.append({"task": task_index, **stats})

    def wall_time(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def timing_summary(self) -> dict:
        """Per-rank means over steps, and this rank's throughput (samples per second of step time)."""
        if not self.steps:
            return {}
        arr = np.array([(s.samples, s.load_s, s.wait_s, s.train_s) for s in self.steps], dtype=np.float64)
        samples, load, wait, train = arr.sum(axis=0)
        step_time = load + wait + train
        n = len(self.steps)
        return {
            "steps": n,
            "mean_load_s": load / n,
            "mean_wait_s": wait / n,
            "mean_train_s": train / n,
            "mean_step_s": step_time / n,
            "samples_per_s_rank": samples / step_time if step_time > 0 else 0.0,
        }

    def state_dict(self) -> dict:
        return {"top1": self.top1, "top5": self.top5, "evaluations": self.evaluations,
                "task_stats": self.task_stats, "steps": self.steps, "elapsed": self.wall_time()}

    def load_state_dict(self, state: dict) -> None:
        self.top1, self.top5 = state["top1"], state["top5"]
        self.evaluations, self.task_stats = state["evaluations"], state["task_stats"]
        self.steps = [StepRecord(*s) for s in state["steps"]]
        self.elapsed_before, self.started = state["elapsed"], time.perf_counter()

    def metrics(self, throughput_total: float | None = None) -> dict:
        out = {
            "accuracy_matrix": self.top1,
            "accuracy_matrix_top5": self.top5,
            **metrics.summary(self.top1),
            "final_average_accuracy_top5": metrics.final_average_accuracy(self.top5),
            "tasks_done": len(self.top1),
            "num_tasks": self.num_tasks,
            "world_size": self.world_size,
            "evaluations": self.evaluations,
            "task_stats": self.task_stats,
            "timing": self.timing_summary(),
            "wall_time_s": self.wall_time(),
        }
        if throughput_total is not None:
            out["timing"]["samples_per_s_total"] = throughput_total
        return out


def write_config(run_dir: Path, cfg: dict) -> None:
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))


def write_metrics(run_dir: Path, result: dict) -> None:
    atomic_write_text(run_dir / "metrics.json", json.dumps(result, indent=2))
    rows = result["accuracy_matrix"]
    lines = ["after_task," + ",".join(f"task_{j}" for j in range(result["num_tasks"]))]
    for i, row in enumerate(rows):
        cells = [f"{v:.6f}" for v in row] + [""] * (result["num_tasks"] - len(row))
        lines.append(f"{i}," + ",".join(cells))
    atomic_write_text(run_dir / "accuracy_matrix.csv", "\n".join(lines) + "\n")


def write_steps(run_dir: Path, rank: int, steps: list[StepRecord]) -> None:
    path = run_dir / f"steps_rank{rank}.csv"
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(StepRecord._fields)
        writer.writerows(steps)
    os.replace(tmp, path)

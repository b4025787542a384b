"""Shared by the trainer benchmarks: run several main.py configurations inside ONE job
(one process, or one mpirun job whose ranks run them in turn), so that every number in a
table is measured side by side on the same machine state, and read their metrics back."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MANY = REPO / "tests" / "mpi_jobs" / "run_main_many.py"


def job_env() -> dict:
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               PYTHONPATH=str(REPO), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env.setdefault("OMPI_MCA_osc", "^ucx")
    env.setdefault("OMPI_MCA_pml", "^ucx")
    return env


def run_in_one_job(runs: dict[str, list[str]], ranks: int, results: Path, common: list[str]) -> dict:
    """{name: main.py flags} -> {name: metrics.json}; all runs in one process / mpirun job."""
    specs = [json.dumps([*flags, *common, "--results-dir", str(results), "--run-name", name,
                         "--plots", "false", "--tensorboard", "false"]) for name, flags in runs.items()]
    cmd = [sys.executable, str(MANY), *specs]
    if ranks > 1:
        cmd = [shutil.which("mpirun") or "mpirun", "-np", str(ranks), "--oversubscribe", "--bind-to", "none", *cmd]
    proc = subprocess.run(cmd, cwd=REPO, env=job_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark job failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return {name: json.loads((results / name / "metrics.json").read_text()) for name in runs}


def steps_after_warmup(run_dir: Path, skip: int) -> list[dict]:
    """Per-step rows of every rank, without each rank's first `skip` steps (warm-up)."""
    import csv

    rows = []
    for path in sorted(run_dir.glob("steps_rank*.csv")):
        with path.open() as f:
            rows += list(csv.DictReader(f))[skip:]
    return rows


def step_breakdown(run_dirs, skip: int = 5) -> dict:
    """Median load / wait / train / step seconds over ranks, steps (after warm-up) and the runs
    in `run_dirs` (one folder or several), and the mean samples per step and rank."""
    import statistics

    dirs = [run_dirs] if isinstance(run_dirs, Path) else list(run_dirs)
    rows = [row for d in dirs for row in steps_after_warmup(d, skip)]
    col = lambda k: [float(r[k]) for r in rows]  # noqa: E731
    step = [float(r["load_s"]) + float(r["wait_s"]) + float(r["train_s"]) for r in rows]
    return {"load_s": statistics.median(col("load_s")), "wait_s": statistics.median(col("wait_s")),
            "train_s": statistics.median(col("train_s")), "step_s": statistics.median(step),
            "mean_wait_s": statistics.fmean(col("wait_s")), "mean_step_s": statistics.fmean(step),
            "samples_per_step": statistics.fmean(col("samples")), "steps": len(rows)}

"""What the benchmarks (benchmarks/bench_*.py) share: running main.py jobs (one run timed as a
whole process, or several configurations inside ONE job -- one process, or one mpirun job whose
ranks run them in turn -- so that every number in a table is measured side by side on the same
machine state), reading their metrics and per-step times back, the pass/fail targets (one table:
targets.yaml), and writing a result as JSON."""
from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from common.mpirun import mpirun_env, mpirun_prefix

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
MAIN = REPO / "main.py"
MANY = BENCHMARKS / "run_main_many.py"
TARGETS = BENCHMARKS / "targets.yaml"
QUIET = ["--plots", "false", "--tensorboard", "false"]  # a benchmark run draws nothing


def int_list(text: str) -> list[int]:
    """"1,2,4" -> [1, 2, 4] (rank counts, seeds)."""
    return [int(v) for v in text.split(",")]


# --- running jobs ----------------------------------------------------------------------------

def launch(argv: list[str], ranks: int) -> list[str]:
    """``argv`` on ``ranks`` ranks: as it is for one, under mpirun (common.mpirun) for more."""
    return [*mpirun_prefix(ranks), *argv] if ranks > 1 else list(argv)


def run_job(argv: list[str], ranks: int, one_thread: bool = True, timeout: float | None = None) -> float:
    """Run ``argv`` on ``ranks`` ranks from the repository root, in common.mpirun's environment
    (``one_thread``: OMP_NUM_THREADS=1 unless set); its wall seconds. A failure ends the
    benchmark with the end of the job's stderr."""
    cmd = launch(argv, ranks)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=mpirun_env(one_thread=one_thread), capture_output=True, text=True,
                          timeout=timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return wall


def run_flags(flags: list[str], results: Path, name: str) -> list[str]:
    """main.py ``flags`` writing run ``name`` into ``results``, without plots or TensorBoard."""
    return [*flags, "--results-dir", str(results), "--run-name", name, *QUIET]


def metrics(results: Path, name: str) -> dict:
    return json.loads((Path(results) / name / "metrics.json").read_text())


def run_main(flags: list[str], ranks: int, results: Path, name: str) -> tuple[dict, float]:
    """One main.py run as a user starts it (its own process or mpirun job, the machine's
    threads): (its metrics.json, wall seconds of the whole process, start-up included)."""
    wall = run_job([sys.executable, str(MAIN), *run_flags(flags, results, name)], ranks, one_thread=False)
    return metrics(results, name), wall


def run_in_one_job(runs: dict[str, list[str]], ranks: int, results: Path, common: list[str]) -> dict:
    """{name: main.py flags} -> {name: metrics.json}; all runs in one process / mpirun job
    (run_main_many.py), ``common`` flags added to each."""
    specs = [json.dumps(run_flags([*flags, *common], results, name)) for name, flags in runs.items()]
    run_job([sys.executable, str(MANY), *specs], ranks)
    return {name: metrics(results, name) for name in runs}


# --- per-step times --------------------------------------------------------------------------

def steps_after_warmup(run_dir: Path, skip: int) -> list[dict]:
    """Per-step rows of every rank, without each rank's first `skip` steps (warm-up)."""
    rows = []
    for path in sorted(run_dir.glob("steps_rank*.csv")):
        with path.open() as f:
            rows += list(csv.DictReader(f))[skip:]
    return rows


def step_breakdown(run_dirs, skip: int = 5) -> dict:
    """Median load / wait / train / step seconds over ranks, steps (after warm-up) and the runs
    in `run_dirs` (one folder or several), and the mean samples per step and rank."""
    dirs = [run_dirs] if isinstance(run_dirs, Path) else list(run_dirs)
    rows = [row for d in dirs for row in steps_after_warmup(d, skip)]

    def col(key):
        return [float(r[key]) for r in rows]

    step = [float(r["load_s"]) + float(r["wait_s"]) + float(r["train_s"]) for r in rows]
    return {"load_s": statistics.median(col("load_s")), "wait_s": statistics.median(col("wait_s")),
            "train_s": statistics.median(col("train_s")), "step_s": statistics.median(step),
            "mean_wait_s": statistics.fmean(col("wait_s")), "mean_step_s": statistics.fmean(step),
            "samples_per_step": statistics.fmean(col("samples")), "steps": len(rows)}


# --- targets ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """One row of targets.yaml: passes when the value is < below, <= max, or >= min."""
    label: str
    show: str = "{:.3g}"
    below: float | None = None
    max: float | None = None
    min: float | None = None

    def passes(self, value: float) -> bool:
        return ((self.below is None or value < self.below) and (self.max is None or value <= self.max)
                and (self.min is None or value >= self.min))

    def report(self, value: float) -> str:
        """"LABEL: PASS (VALUE)"."""
        return f"{self.label}: {verdict(self.passes(value))} ({self.show.format(value)})"


def targets(benchmark: str) -> tuple[dict, dict[str, Target]]:
    """(where the targets apply, {measured key: Target}) of ``benchmark``'s section of targets.yaml."""
    section = yaml.safe_load(TARGETS.read_text())[benchmark]
    return section.get("where", {}), {key: Target(**row) for key, row in section["targets"].items()}


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# --- results ---------------------------------------------------------------------------------

def write_json(result: dict, path: str | Path | None, indent: int = 2) -> None:
    """Write ``result`` to ``path`` (its folder made if needed); nothing without a path."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=indent))

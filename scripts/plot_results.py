#!/usr/bin/env python
"""Re-draw the PNG plots of one or more results folders (into each folder's plots/).

    python scripts/plot_results.py results/20250101-120000-base-digits-s0
    python scripts/plot_results.py results/*/          # every run under results/

Writes RUN_DIR/plots/accuracy_matrix.png, average_accuracy.png and (when steps_rank0.csv is
there) time_breakdown.png, and prints the files written. A folder that is not a results
folder (no readable metrics.json) is a one-line error, exit status 2, before anything is drawn.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PROG = "plot_results.py"


class UsageError(Exception):
    """Bad input: printed as one line, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are UsageError (one line), not usage text and exit."""

    def error(self, message: str):
        raise UsageError(message)


def check_run_dir(path: str) -> Path:
    """The folder as a Path if it holds a readable metrics.json with an accuracy matrix."""
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise UsageError(f"{path}: no such folder")
    metrics = run_dir / "metrics.json"
    if not metrics.is_file():
        raise UsageError(f"{path} is not a results folder (no metrics.json; "
                         f"give the folder of one run, e.g. results/<run-name>)")
    try:
        data = json.loads(metrics.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{metrics} is not readable JSON ({exc})") from None
    if not isinstance(data, dict) or not data.get("accuracy_matrix") or "num_tasks" not in data:
        raise UsageError(f"{metrics} holds no accuracy matrix yet (did the run finish a task?)")
    return run_dir


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=PROG, description="Re-draw the PNG plots of results folders.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a results folder of main.py")
    try:
        args = parser.parse_args(argv)
        run_dirs = [check_run_dir(p) for p in args.run_dirs]
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    from trainer.plots import plot_run

    for run_dir in run_dirs:
        try:
            files = plot_run(run_dir)
        except OSError as exc:  # e.g. a read-only results folder
            print(f"{PROG}: error: cannot write the plots of {run_dir}: {exc}", file=sys.stderr)
            return 1
        for path in files:
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

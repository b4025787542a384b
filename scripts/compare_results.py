#!/usr/bin/env python
"""Compare runs: one plot (average accuracy after each task, one line per run) and one table.

    python scripts/compare_results.py results/naive results/joint
    python scripts/compare_results.py results/* --out comparison/baselines

Prints the Markdown table (final average accuracy, average incremental accuracy, forgetting,
backward transfer, wall time) and writes DIR/comparison.png and DIR/comparison.md
(DIR: --out, default ./comparison). Runs are named by their folder name. A folder that is not
a results folder is a one-line error, exit status 2, before anything is written.
"""
from __future__ import annotations

import sys
from pathlib import Path

from plot_results import OneLineParser, UsageError, check_run_dir  # the script beside this one

PROG = "compare_results.py"


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=PROG, description="Compare results folders: one plot and one table.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="results folders of main.py (two or more)")
    parser.add_argument("--out", default="comparison", metavar="DIR",
                        help="folder for comparison.png and comparison.md (default: ./comparison)")
    try:
        args = parser.parse_args(argv)
        if len(args.run_dirs) < 2:
            raise UsageError(f"give at least two results folders to compare, got {len(args.run_dirs)}")
        run_dirs = [check_run_dir(p) for p in args.run_dirs]
        names = [p.name for p in run_dirs]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise UsageError(f"runs are named by their folder, and {', '.join(dup)} appears twice; "
                             f"rename or copy one of them")
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {args.out} exists and is not a folder")
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    from trainer.plots import compare

    png, table = compare(run_dirs, out)
    print(table, end="")
    print(f"\nwrote {png} and {png.with_name('comparison.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

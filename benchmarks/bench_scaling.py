#!/usr/bin/env python
"""Weak scaling: the same experiment at 1, 2 and 4 ranks (fixed batch per rank) for base and
nil_cpp; prints throughput, parallel efficiency and the time breakdown, as a table and JSON.

    python benchmarks/bench_scaling.py                         # mnistnet, synthetic 3x32x32, B=32
    python benchmarks/bench_scaling.py --ranks 1,2,4,8 --model resnet18 --json scaling.json

The training set grows with the rank count (train_size_per_rank x ranks), so every rank
does the same number of steps. Efficiency = throughput(P) / (P x throughput(1)) for the same
agent. Each rank count is one mpirun job running both agents in turn. On a machine with
fewer cores than ranks, the ranks share cores and the efficiency says so.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from measure import int_list, run_in_one_job, step_breakdown, write_json

AGENTS = ("base", "nil_cpp")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", default="1,2,4")
    p.add_argument("--model", default="mnistnet")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--reps", type=int, default=32)
    p.add_argument("--train-size-per-rank", type=int, default=1280)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    table = {}
    for ranks in int_list(args.ranks):
        size = args.train_size_per_rank * ranks
        common = ["--model", args.model, "--dataset", "synthetic", "--batch-size", str(args.batch_size),
                  "--epochs", "1", "--backend", "torch",
                  "--dataset-config", f"{{'num_classes': 10, 'shape': [3, 32, 32], 'train_size': {size}, "
                                      f"'test_size': {200 * ranks}}}",
                  "--tasksets-config", "{'scenario': 'class', 'initial_increment': 5, 'increment': 5}"]
        runs = {"base": ["--agent", "base"],
                "nil_cpp": ["--agent", "nil_cpp", "--agent-config", f"{{'num_representatives': {args.reps}}}"]}
        with tempfile.TemporaryDirectory() as tmp:
            run_in_one_job(runs, ranks, Path(tmp), common)
            table[ranks] = {}
            for agent in AGENTS:
                b = step_breakdown(Path(tmp) / agent)
                b["throughput"] = ranks * b["samples_per_step"] / b["mean_step_s"]
                table[ranks][agent] = b
        print(f"  done: {ranks} rank(s)", file=sys.stderr)
    first = min(table)
    print(f"\nweak scaling: {args.model}, synthetic 3x32x32, B={args.batch_size} per rank, R={args.reps}")
    print(f"{'ranks':>5} {'agent':<8} {'samples/s':>10} {'efficiency':>10} {'step ms':>8} {'load':>6} "
          f"{'wait':>6} {'train':>7}")
    for ranks, rows in table.items():
        for agent, r in rows.items():
            r["efficiency"] = r["throughput"] / (ranks / first * table[first][agent]["throughput"])
            print(f"{ranks:>5} {agent:<8} {r['throughput']:>10.0f} {r['efficiency']:>10.2f} "
                  f"{1000 * r['mean_step_s']:>8.1f} {1000 * r['load_s']:>6.1f} {1000 * r['wait_s']:>6.2f} "
                  f"{1000 * r['train_s']:>7.1f}")
    out = {"model": args.model, "batch_size": args.batch_size, "reps": args.reps, "ranks": table}
    write_json(out, args.json)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

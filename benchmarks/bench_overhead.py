#!/usr/bin/env python
"""Rehearsal overhead: per-step time of nil_cpp, nil_cpp_cat, nil and nil_local against base at
the same B, on 1 and 2 ranks, every configuration of a rank count run in the same job.

    python benchmarks/bench_overhead.py                       # mnistnet, synthetic 3x32x32, B=32, R=32
    python benchmarks/bench_overhead.py --ranks 1,2 --model resnet18 --json overhead.json   # on GPUs

Reported per agent: median step time (ms) split into load / wait-for-representatives / train,
overhead = step / step(base), the compute floor (B+R)/B, step / (base x (B+R)/B), step / the
step of base with B+R new samples (what B+R samples really cost: on CPUs a step of 2B samples
costs more than twice a step of B), and the wait as a share of the step. Targets (targets.yaml):
native async wait < 5% of the step; nil_cpp within 10% of base x (B+R)/B.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from measure import int_list, run_in_one_job, step_breakdown, targets, write_json

AGENTS = ("base", "nil_cpp", "nil_cpp_cat", "nil", "nil_local")
BASE_BR = "base@B+R"  # base with a batch of B+R new samples: what B+R samples really cost


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", default="1,2")
    p.add_argument("--model", default="mnistnet", help="resnet18 on a GPU; mnistnet keeps a CPU step at tens of ms")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--reps", type=int, default=32, help="R, representatives per step")
    p.add_argument("--train-size", type=int, default=2560, help="synthetic training samples (all ranks)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2, help="runs of every agent, in alternating order")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    B, R = args.batch_size, args.reps
    common = ["--model", args.model, "--dataset", "synthetic", "--epochs", str(args.epochs),
              "--dataset-config", f"{{'num_classes': 10, 'shape': [3, 32, 32], 'train_size': {args.train_size}, "
                                  f"'test_size': 200}}",
              "--tasksets-config", "{'scenario': 'class', 'initial_increment': 5, 'increment': 5}",
              "--backend", "torch"]
    rehearsal = f"{{'num_representatives': {R}, 'rehearsal_ratio': 10}}"
    # Rounds alternate the order (base first, then base last...) so a drift of the machine's
    # speed during the job does not favour the agents that happen to run first.
    flags = {a: ["--agent", a, "--batch-size", str(B)] + (["--agent-config", rehearsal] if a != "base" else [])
             for a in AGENTS}
    flags[BASE_BR] = ["--agent", "base", "--batch-size", str(B + R)]  # the compute B+R samples cost
    runs = {}
    for k in range(args.rounds):
        for a in (list(flags) if k % 2 == 0 else list(flags)[::-1]):
            runs[f"{a}-{k}"] = flags[a]
    table = {}
    for ranks in int_list(args.ranks):
        with tempfile.TemporaryDirectory() as tmp:
            run_in_one_job(runs, ranks, Path(tmp), common)
            table[ranks] = {a: step_breakdown([Path(tmp) / f"{a}-{k}" for k in range(args.rounds)])
                            for a in flags}
        print(f"  done: {ranks} rank(s)", file=sys.stderr)
    floor = (B + R) / B
    where, goals = targets("overhead")
    print(f"\nrehearsal overhead: {args.model}, synthetic 3x32x32, B={B}, R={R}, medians over steps "
          f"(after 5 warm-up steps), ranks "
          f"and {args.rounds} rounds in alternating order")
    print(f"{'ranks':>5} {'agent':<12} {'step ms':>8} {'load':>6} {'wait':>6} {'train':>7} {'vs base':>8} "
          f"{'vs base*(B+R)/B':>16} {'vs base@B+R':>12} {'wait % step':>12}")
    out = {"model": args.model, "B": B, "R": R, "compute_floor": floor, "ranks": {}}
    for ranks, rows in table.items():
        base, base_br = rows["base"]["step_s"], rows[BASE_BR]["step_s"]
        out["ranks"][ranks] = {}
        for agent, r in rows.items():
            ratio, vs_floor, vs_br = r["step_s"] / base, r["step_s"] / (base * floor), r["step_s"] / base_br
            wait_share = r["mean_wait_s"] / r["mean_step_s"]
            out["ranks"][ranks][agent] = {**r, "vs_base": ratio, "vs_base_floor": vs_floor, "vs_base_BR": vs_br,
                                          "wait_share": wait_share}
            print(f"{ranks:>5} {agent:<12} {1000 * r['step_s']:>8.1f} {1000 * r['load_s']:>6.1f} "
                  f"{1000 * r['wait_s']:>6.2f} {1000 * r['train_s']:>7.1f} {ratio:>8.2f} "
                  f"{vs_floor if agent != 'base' else float('nan'):>16.2f} {vs_br:>12.2f} {100 * wait_share:>11.1f}%")
        native = out["ranks"][ranks][where["agent"]]
        print(f"      targets at {ranks} rank(s): " + "; ".join(goal.report(native[key]) for key, goal in goals.items())
              + f"; nil_cpp is {native['vs_base_BR']:.2f} x base at B+R")
    write_json(out, args.json)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

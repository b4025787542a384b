#!/usr/bin/env python
"""Accuracy benchmark: run main.py for several methods and seeds, print a table, write JSON.

    python benchmarks/bench_accuracy.py                      # baselines: naive, joint, transfer
    python benchmarks/bench_accuracy.py --suite rehearsal --seeds 0,1,2
    python benchmarks/bench_accuracy.py --ranks 2 -- --epochs 5   # extra args go to main.py
    python benchmarks/bench_accuracy.py --suite policy --seeds 0,1,2 --json benchmarks/accuracy_policy.json \
        -- --epochs 5 --batch-size 32                        # fixed K x N vs adaptive, lr 0.02 and 0.05

Each method is one main.py run (same flags a user would type); the table gives the mean and
the spread (sample standard deviation over seeds) of final average accuracy and forgetting,
and the mean wall time of the run (the whole process, start-up included). A suite is an entry
of SUITES: a name and its methods, each the main.py flags of one run.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from measure import int_list, run_main, write_json

# suite -> {method -> main.py flags}; --suite picks one, --only some of its methods
SUITES = {
    "baselines": {
        "naive": ["--agent", "base"],
        "joint": ["--config", "joint"],
        "transfer": ["--config", "transfer"],
    },
    "rehearsal": {
        "naive": ["--agent", "base"],
        "joint": ["--config", "joint"],
        "er (nil_cpp)": ["--agent", "nil_cpp"],
        "der": ["--agent", "der"],
        "derpp": ["--agent", "derpp"],
        "agem": ["--agent", "agem"],
        "si (no buffer)": ["--agent", "si"],
        "si + er": ["--agent", "si", "--agent-config", "{'buffer': 'native'}"],
        "pod_er": ["--agent", "pod_er"],
        "cls_er": ["--agent", "cls_er"],
        "super_er": ["--agent", "super_er"],
    },
    # The buffer's insertion policy side by side (ER, nil_cpp, 10% memory, R = 32).
    "policy": {
        f"{policy} lr {lr}": ["--agent", "nil_cpp", "--lr", str(lr), "--agent-config",
                              f"{{'policy': '{policy}', 'rehearsal_ratio': 10, 'num_representatives': 32}}"]
        for lr in (0.02, 0.05) for policy in ("fixed", "adaptive")
    },
    # DER / DER++: which logits are stored and when samples are offered, on the protocol of the
    # issue that compared us with another library's DER++ (run with -- --epochs 5 --batch-size 32
    # --momentum 0.9; memory 10% = 134 samples). With offer 'task_end' the stored logits are
    # always the task's final model's, whatever `logits` says.
    "der_logits": {
        f"{agent} {offer}{' ' + logits if offer != 'task_end' else ''}{' clip ' + str(clip) if clip else ''} lr {lr}": [
            "--agent", agent, "--lr", str(lr), *(["--clip-grad-norm", str(clip)] if clip else []), "--agent-config",
            f"{{'logits': '{logits}', 'offer': '{offer}', 'alpha': 0.3, 'rehearsal_ratio': 10, "
            f"'num_representatives': 32{', ' + repr('beta') + ': 0.5' if agent == 'derpp' else ''}}}"]
        for agent in ("der", "derpp") for lr in (0.02, 0.05)
        for offer, logits, clip in [*((o, lg, 0) for o in ("every_epoch", "first_epoch")
                                      for lg in ("insert", "task_end", "ema")),
                                    ("task_end", "insert", 0), ("task_end", "insert", 10)]
    },
}


def run_one(flags: list[str], seed: int, ranks: int, results: Path, name: str) -> dict:
    m, wall = run_main([*flags, "--seed", str(seed)], ranks, results, name)
    return {"seed": seed, "final_average_accuracy": m["final_average_accuracy"], "forgetting": m["forgetting"],
            "average_incremental_accuracy": m["average_incremental_accuracy"], "wall_s": wall,
            "train_wall_s": m["wall_time_s"]}


def summarise(runs: list[dict]) -> dict:
    def stat(key):
        v = np.array([r[key] for r in runs])
        return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0

    out = {}
    for key in ("final_average_accuracy", "forgetting", "average_incremental_accuracy", "wall_s"):
        out[key + "_mean"], out[key + "_std"] = stat(key)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=sorted(SUITES), default="baselines")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    parser.add_argument("--ranks", type=int, default=1)
    parser.add_argument("--json", default=None, help="write the results here (default: print only)")
    parser.add_argument("--only", default="",
                        help="run only the methods whose name contains one of these (comma-separated)")
    parser.add_argument("extra", nargs="*", help="flags passed to every main.py run (after --)")
    args = parser.parse_args()
    seeds = int_list(args.seeds)
    table = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method, flags in SUITES[args.suite].items():
            if args.only and not any(part in method for part in args.only.split(",")):
                continue
            runs = [run_one([*flags, *args.extra], seed, args.ranks, Path(tmp),
                            f"{method.replace(' ', '_')}-s{seed}") for seed in seeds]
            table[method] = {"runs": runs, **summarise(runs)}
            print(f"  done: {method}", file=sys.stderr)
    pm = "±"
    print(f"\n{args.suite} on the default data ({len(seeds)} seed(s), {args.ranks} rank(s), extra flags: "
          f"{' '.join(args.extra) or 'none'})")
    print(f"{'method':<18} {'final avg acc %':>17} {'forgetting %':>15} {'avg incr acc %':>17} {'wall s':>8}")
    for method, row in table.items():
        print(f"{method:<18} {100 * row['final_average_accuracy_mean']:>9.1f} {pm} "
              f"{100 * row['final_average_accuracy_std']:<5.1f}"
              f" {100 * row['forgetting_mean']:>7.1f} {pm} {100 * row['forgetting_std']:<5.1f}"
              f" {100 * row['average_incremental_accuracy_mean']:>9.1f} {pm} "
              f"{100 * row['average_incremental_accuracy_std']:<5.1f} {row['wall_s_mean']:>8.1f}")
    result = {"suite": args.suite, "seeds": seeds, "ranks": args.ranks, "extra": args.extra, "methods": table}
    write_json(result, args.json)
    print(json.dumps({m: {k: v for k, v in r.items() if k != "runs"} for m, r in table.items()}))


if __name__ == "__main__":
    main()

"""What a run of the default experiment reached, next to the naive and joint baselines.

The numbers are the README's benchmark table (benchmarks/accuracy_rehearsal.json, written by
`benchmarks/bench_accuracy.py --suite rehearsal --seeds 0,1,2`): quoted, not re-measured, so the
run's time is not doubled. Said only when the run's data, model and training length are the
default experiment's, on which those numbers were measured.
"""
from __future__ import annotations

import json
from pathlib import Path

from trainer import config

TABLE = Path(__file__).resolve().parent.parent / "benchmarks" / "accuracy_rehearsal.json"
EXPERIMENT = ("model", "model_config", "dataset", "dataset_dir", "dataset_config", "tasksets_config",
              "epochs", "batch_size")


def comparison(cfg: dict, final_accuracy: float, table: Path = TABLE) -> list[str]:
    """Lines for the end of the run; none for another experiment or without the table."""
    defaults = config.defaults()
    if any(cfg.get(k) != defaults[k] for k in EXPERIMENT):
        return []
    try:
        bench = json.loads(table.read_text())
        methods = {name: row["final_average_accuracy_mean"] for name, row in bench["methods"].items()}
        naive, joint = methods["naive"], methods["joint"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    if bench.get("extra"):  # measured with other flags: not this experiment
        return []
    seeds = bench.get("seeds", [])
    others = ", ".join(f"{name} {100 * value:.1f}%" for name, value in methods.items()
                       if name not in ("naive", "joint"))
    gap = (final_accuracy - naive) / (joint - naive) if joint > naive else float("nan")
    return [f"the default experiment, README benchmark (mean of {len(seeds)} seed(s), 1 process): naive "
            f"fine-tuning {100 * naive:.1f}%, joint retraining {100 * joint:.1f}% (the upper bound); {others}",
            f"this run ({cfg['agent']}): final average accuracy {100 * final_accuracy:.1f}%, "
            f"{100 * gap:.0f}% of the way from naive to joint"]

"""TensorBoard events of a run (rank 0): losses, LR, time breakdown, accuracies, buffer fill."""
from __future__ import annotations

from pathlib import Path


class Telemetry:
    def __init__(self, run_dir: Path, enabled: bool):
        self.writer = None
        self.global_step = 0
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def step(self, row, losses: dict, lr: float) -> None:
        """One trainer.results.StepRecord."""
        if self.writer is None:
            return
        w, n = self.writer, self.global_step
        load_s, wait_s, train_s = row.load_s, row.wait_s, row.train_s
        w.add_scalar("train/loss", row.loss, n)
        for name, value in losses.items():
            w.add_scalar(f"train/{name}", value, n)
        w.add_scalar("train/lr", lr, n)
        w.add_scalars("time/step_breakdown_s", {"load": load_s, "wait": wait_s, "train": train_s}, n)
        total = load_s + wait_s + train_s
        if total > 0:
            w.add_scalar("throughput/samples_per_s_rank0", row.samples / total, n)
        self.global_step += 1

    def evaluation(self, task_index: int, evals: list[dict], stats: dict) -> None:
        if self.writer is None:
            return
        w = self.writer
        for e in evals:
            w.add_scalar(f"accuracy/task_{e['task']}", e["top1"], task_index)
            w.add_scalar(f"accuracy_top5/task_{e['task']}", e["top5"], task_index)
        w.add_scalar("accuracy/average", sum(e["top1"] for e in evals) / len(evals), task_index)
        for key in ("global_filled", "filled"):
            if key in stats:
                w.add_scalar(f"buffer/{key}", stats[key], task_index)
        for r, fill in enumerate(stats.get("filled_per_rank", [])):
            w.add_scalar(f"buffer/filled_rank_{r}", fill, task_index)
        w.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

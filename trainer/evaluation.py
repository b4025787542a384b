"""Evaluate on the test split of every task seen so far; numbers reduced across ranks.

Each rank evaluates a disjoint shard of each test set; the per-task sums of correct top-1,
correct top-5, loss and count are summed over ranks in one allreduce, so every rank
reports the same accuracies.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from data.loader import make_loader
from data.sharding import shard_eval


@torch.no_grad()
def evaluate(module, dataset, tasks, engine, preprocess, batch_size: int, workers: int = 0) -> list[dict]:
    was_training = module.training
    module.eval()
    device = engine.device
    sums = torch.zeros(len(tasks), 4, dtype=torch.float64)
    k = min(5, dataset.num_classes)
    for row, task in enumerate(tasks):
        indices = shard_eval(task.test_indices, engine.rank, engine.world_size)
        if len(indices) == 0:
            continue
        for x, y in make_loader(dataset.test, indices, batch_size, workers, device.type == "cuda"):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits = module(preprocess(x))
            topk = logits.topk(k, dim=1).indices
            hits = topk.eq(y.unsqueeze(1))
            sums[row, 0] += hits[:, 0].sum().item()
            sums[row, 1] += hits.any(dim=1).sum().item()
            sums[row, 2] += F.cross_entropy(logits, y, reduction="sum").item()
            sums[row, 3] += len(y)
    engine.allreduce_sum(sums)
    module.train(was_training)
    out = []
    for task, (top1, top5, loss, count) in zip(tasks, sums.tolist()):
        count = max(count, 1.0)
        out.append({"task": task.index, "top1": top1 / count, "top5": top5 / count,
                    "loss": loss / count, "count": int(count)})
    return out

#!/usr/bin/env python
"""Your own training loop with global rehearsal: plain PyTorch, the trainer's RehearsalMemory.

    mpirun -np 2 python examples/own_loop.py --method er          # MPI (mpi4py) between ranks
    torchrun --nproc-per-node 2 examples/own_loop.py --method der  # torch.distributed (gloo)
    horovodrun -np 2 python examples/own_loop.py --method derpp --horovod
    python examples/own_loop.py --method naive                     # plain fine-tuning, to compare

Class-incremental digits (scikit-learn's 8x8 images, 5 tasks of 2 classes), a small MLP, SGD;
each rank trains on its share of every task and averages the gradients with the others (MPI
allreduce, torch.distributed all_reduce, or Horovod's DistributedOptimizer). The rehearsal lines
are marked "rehearsal:"; everything else is the loop you already have. Prints the accuracy on
every task seen after each task, and the final average accuracy.

The memory's calls (building it, next_batch, insert, refresh_task_extras, close) are collective:
every rank makes them the same number of times, which is why each rank takes the same number of
steps. The ranks check this before each call: a rank that makes one too many, or leaves without
close(), makes every rank raise one line naming the calls instead of hanging.
"""
import argparse
import os

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from agents.own_loop import rehearsal_memory

B, R, TASKS = 32, 32, [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", choices=("naive", "er", "der", "derpp"), default="er")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--buffer-size", type=int, default=100, help="slots per rank")
    p.add_argument("--horovod", action="store_true", help="average gradients with Horovod")
    return p.parse_args()


class Ranks:
    """rank, world size and gradient averaging: torch.distributed under torchrun, else MPI."""

    def __init__(self, horovod: bool):
        self.hvd = None
        if horovod:
            import horovod.torch as hvd

            hvd.init()
            self.hvd, self.rank, self.size = hvd, hvd.rank(), hvd.size()
        elif "TORCHELASTIC_RUN_ID" in os.environ:  # torchrun
            import torch.distributed as dist

            dist.init_process_group("gloo")
            self.dist, self.rank, self.size = dist, dist.get_rank(), dist.get_world_size()
        else:
            from mpi4py import MPI

            self.dist, self.comm = None, MPI.COMM_WORLD
            self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()

    def optimizer(self, model, lr):
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        if self.hvd is not None:
            self.hvd.broadcast_parameters(model.state_dict(), root_rank=0)
            return self.hvd.DistributedOptimizer(opt, named_parameters=model.named_parameters())
        return opt

    def average_gradients(self, model):
        if self.hvd is not None or self.size == 1:
            return  # Horovod's optimizer averages in step()
        for p in model.parameters():
            if self.dist is not None:
                self.dist.all_reduce(p.grad)
            else:
                p.grad.copy_(torch.from_numpy(self.comm.allreduce(p.grad.numpy())))
            p.grad /= self.size


def main():
    args = parse()
    ranks = Ranks(args.horovod)
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    digits = load_digits()
    x = torch.from_numpy((digits.images * 255 / 16).astype(np.uint8)).unsqueeze(1)  # (N, 1, 8, 8) uint8
    y = torch.from_numpy(digits.target).long()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(1234))
    train, test = order[: len(y) * 3 // 4], order[len(y) * 3 // 4:]
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    optimizer = ranks.optimizer(model, args.lr)

    def normalise(u8):
        return u8.float() / 255.0

    memory = None
    if args.method != "naive":  # rehearsal: one buffer slice per rank, drawn from globally
        memory = rehearsal_memory(sample_shape=(1, 8, 8), num_classes=10, batch_size=B, buffer_size=args.buffer_size,
                                  num_representatives=R, num_extras=10 if args.method != "er" else 0, seed=args.seed)
    accuracies = []
    for t, classes in enumerate(TASKS):
        task = train[torch.isin(y[train], torch.tensor(classes))]
        if memory is not None:
            memory.begin_task()                                              # rehearsal: a new task
        per_rank = len(task) // ranks.size  # every rank takes the same number of steps (draws are collective)
        for epoch in range(args.epochs):
            mine = task[torch.randperm(len(task), generator=torch.Generator().manual_seed(args.seed * 1000 + epoch))]
            mine = mine[ranks.rank * per_rank:(ranks.rank + 1) * per_rank]
            for first in range(0, per_rank - B + 1, B):
                xb, yb = x[mine[first:first + B]], y[mine[first:first + B]]
                if memory is None:
                    logits = model(normalise(xb))
                    loss = F.cross_entropy(logits, yb)
                else:
                    _, batch = memory.next_batch(xb, yb)                     # rehearsal: B new + R drawn
                    logits = model(normalise(batch.x))
                    new = logits[: batch.b]
                    memory.insert(xb, yb, new.detach() if args.method != "er" else None)  # rehearsal: offer
                    if args.method == "er":
                        loss = F.cross_entropy(logits, batch.y)
                    else:                                                    # rehearsal: DER / DER++ terms
                        loss = F.cross_entropy(new, yb)
                        if batch.n:
                            reps = logits[batch.b:]
                            loss = loss + 0.3 * F.mse_loss(reps, batch.extras)
                            if args.method == "derpp":
                                loss = loss + 0.5 * F.cross_entropy(reps, batch.y[batch.b:])
                optimizer.zero_grad()
                loss.backward()
                ranks.average_gradients(model)
                optimizer.step()
        if memory is not None and args.method != "er":  # rehearsal: stored logits of this task's samples,
            with torch.no_grad():                        # recomputed with the model as trained (DER's
                memory.refresh_task_extras(lambda u8: model(normalise(u8)))  # logits 'task_end'; collective)
        with torch.no_grad():
            seen = [test[torch.isin(y[test], torch.tensor(c))] for c in TASKS[: t + 1]]
            accuracies = [float((model(normalise(x[s])).argmax(1) == y[s]).float().mean()) for s in seen]
        if ranks.rank == 0:
            print(f"after task {t + 1}: " + " ".join(f"{a:.3f}" for a in accuracies), flush=True)
    if memory is not None:
        memory.close()  # collective: every rank, once
    if ranks.rank == 0:
        print(f"final average accuracy {np.mean(accuracies):.4f} ({args.method}, {ranks.size} rank(s))", flush=True)


if __name__ == "__main__":
    main()

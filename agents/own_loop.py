"""Global rehearsal in your own training loop: the same RehearsalMemory the trainer's agents use
(the buffer, the prefetched draw, the B+R minibatch), built from plain arguments; you keep your
model, optimizer, data and launcher.

    from agents.own_loop import rehearsal_memory
    memory = rehearsal_memory(sample_shape=(1, 8, 8), num_classes=10, batch_size=32, buffer_size=200)
    for x, y in loader:                                 # uint8 samples, int64 labels, host memory
        _, batch = memory.next_batch(x, y)              # B new samples, then R representatives
        logits = model(batch.x.float() / 255)
        memory.insert(x, y)                             # offer the new ones; the next draw starts
        loss = F.cross_entropy(logits, batch.y)
        optimizer.zero_grad(); loss.backward(); optimizer.step()

For DER store logits (``num_extras=num_classes``; ``memory.insert(x, y, logits[:batch.b].detach())``)
and add ``alpha * F.mse_loss(logits[batch.b:], batch.extras)``; ``examples/own_loop.py`` is a
complete program. Under mpirun/srun/horovodrun the ranks draw from each other's slices over MPI
(mpi4py's COMM_WORLD); under torchrun, once ``torch.distributed`` is initialised, over a gloo
group. Every call that draws (``next_batch`` after ``insert``) is collective: all ranks call it
the same number of times.
"""
from __future__ import annotations

import os
from types import SimpleNamespace

import torch

from agents import memory
from common.errors import UserError
from common.options import merge_options

MPI_LAUNCH_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "SLURM_NTASKS", "HOROVOD_SIZE")


class _Ranks:
    """The part of the trainer's engine RehearsalMemory uses, from MPI or torch.distributed."""

    def __init__(self):
        import torch.distributed as dist

        torch_job = dist.is_available() and dist.is_initialized()
        self.mpi_comm = None
        if not torch_job or any(v in os.environ for v in MPI_LAUNCH_VARIABLES):
            from mpi4py import MPI

            self.mpi_comm = MPI.COMM_WORLD
        if self.mpi_comm is not None:
            self.rank, self.world_size = self.mpi_comm.Get_rank(), self.mpi_comm.Get_size()
        else:
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.launch = SimpleNamespace(launcher="your loop", local_size=int(os.environ.get("LOCAL_WORLD_SIZE", 1)))

    def allreduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return tensor
        if self.mpi_comm is not None:
            tensor.copy_(torch.from_numpy(self.mpi_comm.allreduce(tensor.numpy())))
        else:
            import torch.distributed as dist

            dist.all_reduce(tensor)
        return tensor


def rehearsal_memory(*, sample_shape, num_classes: int, batch_size: int, buffer_size: int,
                     num_representatives: int = 32, num_extras: int = 0, seed: int = 0, device="cpu",
                     **options) -> memory.RehearsalMemory:
    """Collective: a RehearsalMemory of ``buffer_size`` slots per rank (the adaptive policy) for B =
    ``batch_size`` new uint8 samples of ``sample_shape`` per step and R = ``num_representatives``.
    ``options`` are the rehearsal agents' (``buffer``, ``mix``, ``async``, ``num_candidates``,
    ``offer``, ...; README, Agents). Samples stay uint8 in the buffer; normalise them yourself."""
    options = merge_options("rehearsal_memory()", options, {**memory.OPTIONS, "buffer_size": buffer_size,
                                                           "num_representatives": num_representatives})
    for key, allowed in memory.CHOICES.items():
        if options[key] not in allowed:
            raise UserError(f"{key}={options[key]!r}; valid values: {', '.join(map(repr, allowed))}")
    ctx = SimpleNamespace(engine=_Ranks(), seed=seed, num_classes=num_classes, sample_shape=tuple(sample_shape),
                          batch_size=batch_size, train_size=0, device=torch.device(device))
    return memory.RehearsalMemory(options, ctx, num_extras)

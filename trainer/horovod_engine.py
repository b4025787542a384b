"""Horovod engine: DistributedOptimizer averages gradients; rank 0's weights are broadcast."""
from __future__ import annotations

import horovod.torch as hvd
import torch

from trainer import mpi
from trainer.engine import Engine
from trainer.launch import LaunchInfo


class RowMajor(hvd.Compression.none):
    """Horovod reduces row-major tensors only: a channels-last gradient (--channels-last) travels
    as a row-major copy and comes back in its own layout; row-major ones travel as they are."""

    @staticmethod
    def compress(tensor):
        if tensor.is_contiguous():
            return tensor, None
        layout = torch.channels_last if tensor.is_contiguous(memory_format=torch.channels_last) else None
        return tensor.contiguous(), layout

    @staticmethod
    def decompress(tensor, ctx):
        return tensor if ctx is None else tensor.contiguous(memory_format=ctx)


def _broadcast(model) -> None:
    """Rank 0's weights and buffers everywhere, whatever their memory layout."""
    state = model.state_dict()
    row_major = {k: v.contiguous() for k, v in state.items()}
    hvd.broadcast_parameters(row_major, root_rank=0)
    for k, v in state.items():
        if row_major[k] is not v:
            v.copy_(row_major[k])


class HorovodEngine(Engine):
    name = "horovod"

    def __init__(self, launch, device):
        if launch.has_mpi:
            hvd.init(comm=mpi.world())
        else:
            hvd.init()
        # Horovod's own view is the truth (e.g. horovodrun's gloo controller).
        super().__init__(LaunchInfo(launch.launcher, hvd.rank(), hvd.size(), hvd.local_rank()), device)

    def wrap_model(self, model):
        _broadcast(model)
        return model

    def wrap_optimizer(self, optimizer, model):
        return hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters(), compression=RowMajor)

    def broadcast_parameters(self, model):
        _broadcast(model)

    def allreduce_sum(self, tensor):
        tensor.copy_(hvd.allreduce(tensor, op=hvd.Sum))
        return tensor

    def broadcast_object(self, obj):
        return hvd.broadcast_object(obj, root_rank=0, name="engine.broadcast_object")  # names must match

    def allgather_object(self, obj):
        return hvd.allgather_object(obj, name="engine.allgather_object")

    def barrier(self):
        hvd.barrier()

    def shutdown(self):
        hvd.shutdown()

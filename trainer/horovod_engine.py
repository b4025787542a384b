"""Horovod engine: DistributedOptimizer averages gradients; rank 0's weights are broadcast."""
from __future__ import annotations

import horovod.torch as hvd

from trainer import mpi
from trainer.engine import Engine
from trainer.launch import LaunchInfo


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
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        return model

    def wrap_optimizer(self, optimizer, model):
        return hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters())

    def broadcast_parameters(self, model):
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)

    def allreduce_sum(self, tensor):
        tensor.copy_(hvd.allreduce(tensor, op=hvd.Sum))
        return tensor

    def broadcast_object(self, obj):
        return hvd.broadcast_object(obj, root_rank=0, name="engine.broadcast_object")  # names must match

    def barrier(self):
        hvd.barrier()

    def shutdown(self):
        hvd.shutdown()

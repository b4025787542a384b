"""torch.distributed engine: DDP for gradients, gloo on CPU and NCCL on GPU."""
from __future__ import annotations

import os
import socket
from datetime import timedelta

import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from common.errors import UserError
from trainer import mpi
from trainer.engine import Engine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class TorchEngine(Engine):
    name = "torch"

    def __init__(self, launch, device):
        super().__init__(launch, device)
        self.distributed = launch.world_size > 1
        self._rendezvous_set = False
        if not self.distributed:
            return
        if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
            if not launch.has_mpi:
                raise UserError(f"launched by {launch.launcher} without MASTER_ADDR/MASTER_PORT set")
            # Under mpirun/srun, rank 0 picks the rendezvous point and MPI tells the others.
            addr, port = mpi.world().bcast((socket.gethostname(), _free_port()), root=0)
            os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = addr, str(port)
            self._rendezvous_set = True
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            rank=launch.rank,
            world_size=launch.world_size,
            timeout=timedelta(minutes=10),
            device_id=device if device.type == "cuda" else None,
        )

    def wrap_model(self, model):
        if not self.distributed:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)  # broadcasts rank 0's weights

    def wrap_optimizer(self, optimizer, model):
        return optimizer

    def broadcast_parameters(self, model):
        if self.distributed:
            for tensor in list(model.parameters()) + list(model.buffers()):
                dist.broadcast(tensor.data, src=0)

    def allreduce_sum(self, tensor):
        if self.distributed:
            if self.device.type == "cuda" and tensor.device.type != "cuda":  # NCCL reduces GPU memory
                on_device = tensor.to(self.device)
                dist.all_reduce(on_device, op=dist.ReduceOp.SUM)
                tensor.copy_(on_device.cpu())
            else:
                dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_object(self, obj):
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def allgather_object(self, obj):
        if not self.distributed:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self):
        if self.distributed:
            dist.barrier()

    def shutdown(self):
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()
        if self._rendezvous_set:  # a later engine in this process picks a fresh port
            os.environ.pop("MASTER_ADDR", None)
            os.environ.pop("MASTER_PORT", None)

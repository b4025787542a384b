"""The distributed engine a run trains with: Horovod or torch.distributed, behind one interface.

Agents and the task loop only see this interface: they never import Horovod, MPI or
torch.distributed. Gradients are averaged by the engine (Horovod's DistributedOptimizer or
torch DDP), never by home-made collectives.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
from abc import ABC, abstractmethod

import torch

from common.errors import AgreedError, UserError
from trainer import mpi
from trainer.launch import LaunchInfo, detect

log = logging.getLogger(__name__)


class Engine(ABC):
    name = "engine"

    def __init__(self, launch: LaunchInfo, device: torch.device):
        self.launch = launch
        self.device = device

    @property
    def rank(self) -> int:
        return self.launch.rank

    @property
    def world_size(self) -> int:
        return self.launch.world_size

    @property
    def local_rank(self) -> int:
        return self.launch.local_rank

    @property
    def mpi_comm(self):
        """mpi4py COMM_WORLD spanning exactly the training ranks, or None (torchrun, gloo horovodrun)."""
        if not self.launch.has_mpi:
            return None
        comm = mpi.world()
        return comm if comm.Get_size() == self.world_size else None

    @abstractmethod
    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module to train through (DDP wrapper or the model itself), weights synced from rank 0."""

    @abstractmethod
    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module):
        """The optimizer whose step averages gradients across ranks."""

    @abstractmethod
    def broadcast_parameters(self, model: torch.nn.Module) -> None:
        """Copy rank 0's weights and buffers to every rank."""

    @abstractmethod
    def allreduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks, in place; returns the tensor."""

    @abstractmethod
    def broadcast_object(self, obj):
        """Rank 0's picklable object, on every rank."""

    @abstractmethod
    def allgather_object(self, obj) -> list:
        """Every rank's picklable object, in rank order, on every rank."""

    @abstractmethod
    def barrier(self) -> None: ...

    def decide(self, fn):
        """fn() run on rank 0 only, its result on every rank; its UserError raised on every rank
        (as AgreedError), so a refused start ends every rank cleanly with one message."""
        outcome = None
        if self.rank == 0:
            try:
                outcome = ("ok", fn())
            except UserError as exc:
                outcome = ("error", str(exc))
        outcome = self.broadcast_object(outcome)
        if outcome[0] == "error":
            raise AgreedError(outcome[1])
        return outcome[1]

    def shutdown(self) -> None:  # noqa: B027  (a hook: an engine with nothing to leave keeps the no-op)
        """Leave the process group cleanly at the end of a run."""

    def abort(self, code: int) -> None:
        """End every rank now: MPI_Abort under MPI; under torchrun a non-zero exit ends the job."""
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        mpi.abort(code)
        os._exit(code)


def choose_device(name: str, launch: LaunchInfo) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but torch sees no CUDA device; valid choices here: cpu, auto")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    index = launch.local_rank % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def horovod_available() -> bool:
    return importlib.util.find_spec("horovod") is not None and importlib.util.find_spec("horovod.torch") is not None


def start_engine(backend: str, device_name: str) -> Engine:
    """Start the engine named by --backend (auto: Horovod when importable, else torch.distributed)."""
    launch = detect()
    if launch.launcher == "torchrun":
        # torchrun starts N independent processes with only torch's rendezvous: Horovod would
        # make each of them a one-rank job writing the same folder.
        if backend == "horovod":
            raise UserError("--backend horovod cannot run under torchrun (it gives no MPI or Horovod "
                            "rendezvous); use --backend torch, or launch with horovodrun/mpirun")
        backend = "torch"
    if backend == "auto":
        backend = "horovod" if horovod_available() else "torch"
    if backend == "horovod" and not horovod_available():
        raise UserError("--backend horovod asked for, but Horovod is not installed "
                        "(install it with scripts/install_horovod.sh, or use --backend torch|auto)")
    device = choose_device(device_name, launch)
    if launch.has_mpi and (backend == "horovod" or launch.world_size > 1):
        # MPI first, with MPI_THREAD_MULTIPLE, so Horovod and the buffer share it and
        # Horovod's shutdown does not finalize MPI under the buffer's feet.
        mpi.world()
    if backend == "horovod":
        from trainer.horovod_engine import HorovodEngine

        engine = HorovodEngine(launch, device)
    else:
        from trainer.torch_engine import TorchEngine

        engine = TorchEngine(launch, device)
    if engine.world_size != launch.world_size:
        raise UserError(f"{launch.launcher} started {launch.world_size} ranks but the {engine.name} engine "
                        f"sees {engine.world_size}: the ranks would train as separate jobs; check the "
                        f"launcher and --backend")
    return engine

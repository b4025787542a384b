"""Who launched us: rank, world size and local rank from the launcher's environment.

Every launcher users run the trainer with leaves its own variables: Open MPI's mpirun
(and horovodrun, which calls it), MPICH/Hydra and Slurm's srun with PMI/PMIx, torchrun,
and horovodrun's gloo controller. A plain `python main.py` is one rank.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

# (launcher, rank, size, local rank, local size) variable names, first match wins.
_LAUNCHERS = (
    ("mpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
     "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("horovodrun", "HOROVOD_RANK", "HOROVOD_SIZE", "HOROVOD_LOCAL_RANK", "HOROVOD_LOCAL_SIZE"),
    ("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"),
    ("mpi", "PMIX_RANK", "PMIX_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
    ("mpi", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
    ("slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"),
)


@dataclass(frozen=True)
class LaunchInfo:
    launcher: str  # single | mpi | slurm | torchrun | horovodrun
    rank: int
    world_size: int
    local_rank: int
    local_size: int = 1  # ranks on this node

    @property
    def has_mpi(self) -> bool:
        """Whether MPI can connect the ranks (one rank always can, as an MPI singleton)."""
        return self.launcher in ("single", "mpi", "slurm")


def _int(env, name, fallback=0) -> int:
    try:
        return int(str(env.get(name, fallback)).split("(")[0])
    except ValueError:
        return fallback


def detect(env=None) -> LaunchInfo:
    env = os.environ if env is None else env
    for launcher, rank, size, local_rank, local_size in _LAUNCHERS:
        if rank in env and size in env:
            return LaunchInfo(launcher, _int(env, rank), _int(env, size, 1), _int(env, local_rank),
                              max(1, _int(env, local_size, 1)))
    return LaunchInfo("single", 0, 1, 0)

"""Launcher detection and engine choice."""
import pytest

from common.errors import UserError
from trainer import engine
from trainer.launch import detect


@pytest.mark.parametrize("env, expected", [
    ({}, ("single", 0, 1, 0)),
    ({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "1"},
     ("mpi", 3, 8, 1)),
    ({"PMI_RANK": "2", "PMI_SIZE": "4", "MPI_LOCALRANKID": "0"}, ("mpi", 2, 4, 0)),
    ({"PMIX_RANK": "5", "PMIX_SIZE": "6"}, ("mpi", 5, 6, 0)),
    ({"SLURM_PROCID": "7", "SLURM_NTASKS": "16", "SLURM_LOCALID": "3"}, ("slurm", 7, 16, 3)),
    ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "TORCHELASTIC_RUN_ID": "x"}, ("torchrun", 1, 2, 1)),
    ({"HOROVOD_RANK": "1", "HOROVOD_SIZE": "2", "HOROVOD_LOCAL_RANK": "1"}, ("horovodrun", 1, 2, 1)),
    # mpirun inside an allocation: MPI's own variables win over Slurm's
    ({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"},
     ("mpi", 1, 2, 0)),
])
def test_rank_and_world_size_from_each_launcher(env, expected):
    info = detect(env)
    assert (info.launcher, info.rank, info.world_size, info.local_rank) == expected
    assert info.has_mpi == (expected[0] in ("single", "mpi", "slurm"))


def test_horovod_asked_for_but_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(engine, "horovod_available", lambda: False)
    with pytest.raises(UserError, match="Horovod is not installed .*scripts/install_horovod.sh"):
        engine.start_engine("horovod", "cpu")


def test_auto_backend_falls_back_to_torch_without_horovod(monkeypatch):
    monkeypatch.setattr(engine, "horovod_available", lambda: False)
    chosen = engine.start_engine("auto", "cpu")
    assert chosen.name == "torch" and chosen.world_size == 1


def test_cuda_asked_for_without_a_gpu_is_a_clear_error():
    if engine.torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(UserError, match="no CUDA device"):
        engine.start_engine("torch", "cuda")

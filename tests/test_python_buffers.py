"""What only the plain-Python buffers do (``buffers``); the contract every kind shares is in
test_buffer_contract.py. The multi-rank checks run in tests/mpi_jobs/python_buffers.py under
``mpirun -np 2`` and ``-np 4``.
"""
import sys
from pathlib import Path

import pytest

from buffers import make_buffer, native_available

JOB = Path(__file__).parent / "mpi_jobs" / "python_buffers.py"


def test_factory_native_missing_says_how_to_build(monkeypatch):
    monkeypatch.setitem(sys.modules, "cpp_loader", None)  # as if the extension were not installed
    assert not native_available()
    with pytest.raises(ImportError, match=r"pip install \./cpp_loader"):
        make_buffer("native", num_classes=2, slots_per_class=2, sample_shape=(3,))


# ------------------------------------------------------------------ several ranks

@pytest.mark.timeout(60)
@pytest.mark.parametrize("ranks", [2, 4])
def test_mpi_job(mpirun, ranks):
    """Byte-exact representatives (global: from other ranks too; local: own only), uniform
    global draws over unequally filled ranks, determinism, state, shape mismatch."""
    proc = mpirun(ranks, [sys.executable, str(JOB)], timeout=50)
    assert "all ok" in proc.stdout, proc.stdout + proc.stderr

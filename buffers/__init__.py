"""Rehearsal buffers behind one interface, chosen by name.

``make_buffer(kind, **kwargs)`` with kind

* ``'native'`` -- ``cpp_loader.Buffer``: global draws with MPI one-sided reads on a
  background thread (``pip install ./cpp_loader``);
* ``'python'`` -- ``PythonGlobalBuffer`` (the users' ``nil``): the same global semantics in
  plain Python with mpi4py collectives, the baseline the native one is measured against;
* ``'local'`` -- ``LocalBuffer`` (``nil_local``): each rank draws from its own slice only;
* ``'torch'`` -- ``TorchGlobalBuffer`` (torch_global.py): ``'python'``'s global draws over a
  torch.distributed gloo group, for ranks without MPI between them (``torchrun``); needs
  torch.distributed initialised, so it is in ``TRANSPORT_KINDS`` but not in ``KINDS`` (the kinds
  that work in any process, MPI singleton included); its ``comm`` argument is ignored.

All of them satisfy ``RehearsalBuffer`` (below) and take ``(num_classes=None,
slots_per_class=None, sample_shape, dtype='uint8', num_extras=0, seed=0, comm=None, *,
capacity=None, policy=None)`` -- ``capacity=M`` for the adaptive policy (M slots per rank
shared by the classes seen), ``num_classes`` and ``slots_per_class`` for ``policy='fixed'``.
The plain-Python twins mirror cpp_loader/src module by module: ``arguments`` (config.cpp and
the array checks, with the same messages), ``reservoir`` (reservoir.cpp), ``storage``
(storage.cpp), ``sampler`` (sampler.cpp), ``slice`` (buffer.cpp); ``python_global`` is the
mpi4py transport, ``torch_global`` the torch.distributed one, ``reshard`` re-shards any kind's
states for another world size. Example::

    buf = make_buffer("python", sample_shape=(3, 32, 32), capacity=1000)
    slots = buf.add(x_u8, y)
    n = buf.sample(56, out_x, out_y)
"""
from typing import Protocol, runtime_checkable

from .arguments import CLOSED, LabelError
from .local import LocalBuffer
from .python_global import PythonGlobalBuffer

KINDS = ("native", "python", "local")
TRANSPORT_KINDS = ("torch",)  # kinds that need a launcher's transport set up first (torch.distributed)
ALL_KINDS = KINDS + TRANSPORT_KINDS
NATIVE_MISSING = ("the native buffer needs the cpp_loader extension, which is not installed "
                  "({}); build it with: pip install ./cpp_loader")

__all__ = ["ALL_KINDS", "KINDS", "TRANSPORT_KINDS", "CLOSED", "LabelError", "LocalBuffer", "PythonGlobalBuffer",
           "RehearsalBuffer", "buffer_class", "make_buffer", "native_available"]


@runtime_checkable
class RehearsalBuffer(Protocol):
    """What the agents rely on; ``cpp_loader.Buffer``, ``PythonGlobalBuffer`` and ``LocalBuffer``
    all satisfy it, with the same state keys and the same error messages.

    Local calls touch this rank's slice only; draws are collective over the buffer's
    communicator for the global kinds. Arrays are numpy arrays or CPU tensors (no copies)."""

    rank: int
    world_size: int
    capacity: int
    num_extras: int
    policy: str

    def add(self, x, y, extras=None):
        """Local: offer n samples to the reservoir; -> int64 (n,) slot each took, -1 if not kept."""

    def read(self, slots, out_x, out_y, out_extras=None) -> None:
        """Local: the contents of filled local slots into rows [0, m) of the outputs."""

    def write_extras(self, slots, extras) -> None:
        """Local: rewrite the extras of filled local slots; a remote reader sees each row all
        old or all new."""

    def sample(self, r, out_x, out_y, out_extras=None, out_where=None) -> int:
        """Draw n = min(r, filled) representatives into rows [0, n); out_where gets (owner rank,
        slot) per row."""

    def start(self, r, out_x, out_y, out_extras=None, out_where=None) -> None:
        """Like sample(), possibly in the background; finish with wait()."""

    def wait(self) -> int:
        """n of the draw begun by start()."""

    def stats(self) -> dict: ...

    def state(self) -> dict:
        """This rank's slice: samples, labels, extras, classes, seen_per_class,
        filled_per_class, insertion_generator, draw_generator, and the description."""

    def load_state(self, state) -> None: ...

    def close(self) -> None:
        """Collective and idempotent."""


def _native_class():
    try:
        import cpp_loader
    except ImportError as exc:
        raise ImportError(NATIVE_MISSING.format(exc)) from exc
    native = getattr(cpp_loader, "Buffer", None)
    if native is None:  # e.g. the repository's source folder seen as a namespace package
        where = list(getattr(cpp_loader, "__path__", [])) or getattr(cpp_loader, "__file__", "?")
        raise ImportError(NATIVE_MISSING.format(f"'cpp_loader' found at {where} has no Buffer"))
    return native


def native_available() -> bool:
    """True when the built cpp_loader extension imports."""
    try:
        _native_class()
    except ImportError:
        return False
    return True


def buffer_class(kind: str):
    """The class behind a kind name; the native one is imported only when asked for."""
    if kind == "native":
        return _native_class()
    if kind == "python":
        return PythonGlobalBuffer
    if kind == "local":
        return LocalBuffer
    if kind == "torch":
        from .torch_global import TorchGlobalBuffer  # imports torch.distributed only when asked for

        return TorchGlobalBuffer
    raise ValueError(f"unknown buffer kind {kind!r}; valid kinds: {', '.join(ALL_KINDS)}")


def make_buffer(kind: str, **kwargs):
    """Build a buffer of `kind` ('native' | 'python' | 'local' | 'torch'); collective."""
    return buffer_class(kind)(**kwargs)

"""Rehearsal buffers behind one interface, chosen by name.

``make_buffer(kind, **kwargs)`` with kind

* ``'native'`` -- ``cpp_loader.Buffer``: global draws with MPI one-sided reads on a
  background thread (``pip install ./cpp_loader``);
* ``'python'`` -- ``PythonGlobalBuffer`` (the users' ``nil``): the same global semantics in
  plain Python with mpi4py collectives, the baseline the native one is measured against;
* ``'local'`` -- ``LocalBuffer`` (``nil_local``): each rank draws from its own slice only.

All three take ``(num_classes=None, slots_per_class=None, sample_shape, dtype='uint8',
num_extras=0, seed=0, comm=None, *, capacity=None, policy=None)`` -- ``capacity=M`` for the
adaptive policy (M slots per rank shared by the classes seen), ``num_classes`` and
``slots_per_class`` for ``policy='fixed'`` -- and offer ``add``, ``sample``, ``start``/``wait``,
``stats``, ``state``/``load_state`` and ``close`` (see buffers/reservoir.py for the shared
rules). Example::

    buf = make_buffer("python", sample_shape=(3, 32, 32), capacity=1000)
    buf.add(x_u8, y)
    n = buf.sample(56, out_x, out_y)
"""
from .local import LocalBuffer
from .python_global import PythonGlobalBuffer
from .reservoir import CLOSED, LabelError

KINDS = ("native", "python", "local")
NATIVE_MISSING = ("the native buffer needs the cpp_loader extension, which is not installed "
                  "({}); build it with: pip install ./cpp_loader")

__all__ = ["KINDS", "CLOSED", "LabelError", "LocalBuffer", "PythonGlobalBuffer",
           "buffer_class", "make_buffer", "native_available"]


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
    raise ValueError(f"unknown buffer kind {kind!r}; valid kinds: {', '.join(KINDS)}")


def make_buffer(kind: str, **kwargs):
    """Build a buffer of `kind` ('native' | 'python' | 'local'); collective."""
    return buffer_class(kind)(**kwargs)

"""The public Buffer: argument conversion (numpy, DLPack) and lifetime over cpp_loader._core."""
import atexit
import itertools
import numbers
import operator
import sys
import weakref
from collections.abc import Iterable, Mapping

import numpy as np

from ._extension import MPI, _core

STATE_KIND = "cpp_loader.Buffer/1"
CLOSED = "buffer is closed"
_DLPACK_CPU = 1


class Buffer:
    """One rank's slice of a rehearsal buffer that is sampled globally, across all ranks.

    Each rank keeps a class-balanced reservoir slice in an MPI window: ``capacity=M`` slots
    shared by the classes seen so far (the adaptive policy), or ``num_classes x
    slots_per_class`` slots (the fixed policy); ``sample``/``start`` draw representatives
    uniformly over the filled slots of every rank, reading remote ones with one-sided MPI_Get.

    Args:
        num_classes (int): K. Fixed: the number of classes (labels in ``[0, K)``). Adaptive:
            optional; when given, labels are checked to be below it (default: any label >= 0).
        slots_per_class (int): N, slots per class on each rank (fixed policy only).
        sample_shape (tuple of int): shape of one sample, e.g. ``(3, 32, 32)``.
        dtype (str or numpy dtype): ``'uint8'``, ``'float32'`` or ``'float16'``. Default uint8.
        num_extras (int): float32 values stored beside each sample (e.g. DER logits). Default 0.
        seed (int): seeds insertion (from (seed, rank, 1)) and draws (from (seed, rank)). Default 0.
        comm (mpi4py.MPI.Intracomm): default ``MPI.COMM_WORLD``. Collective over it.
        capacity (int): M, slots per rank of the adaptive policy.
        policy (str): ``'adaptive'`` or ``'fixed'``; default: adaptive when ``capacity`` is
            given, else fixed. See README.md, "Semantics", for the insertion rules.

    Raises ValueError on every rank if any rank's arguments are invalid or ranks disagree.

    Example::

        with Buffer(sample_shape=(3, 32, 32), capacity=500) as buf:   # or Buffer(10, 50, (3, 32, 32))
            buf.add(x, y)                            # local
            buf.start(64, out_x, out_y)              # collective, runs in the background
            ...                                      # train a step
            n = buf.wait()                           # rows [0, n) of out_x, out_y are filled
    """

    def __init__(self, num_classes=None, slots_per_class=None, sample_shape=None, dtype="uint8",
                 num_extras=0, seed=0, comm=None, *, capacity=None, policy=None):
        comm = MPI.COMM_WORLD if comm is None else comm
        if not isinstance(comm, MPI.Intracomm) or comm == MPI.COMM_NULL:
            raise TypeError(f"comm must be an mpi4py intracommunicator, got {comm!r}")
        (num_classes, slots_per_class, shape, dtype_name, num_extras, seed, capacity, policy), problem = \
            _convert(num_classes, slots_per_class, sample_shape, dtype, num_extras, seed, capacity, policy)
        self._pending = None  # the output arrays of the draw in flight, kept alive until wait()
        # Validates the values (C++: Arguments::parse, Config::problem), collectively.
        self._core = _core.Buffer(num_classes, slots_per_class, shape, dtype_name, num_extras, seed,
                                  MPI._addressof(comm), problem, policy, capacity)
        self._policy, self._num_classes, self._slots_per_class = policy, num_classes, slots_per_class
        self._capacity = capacity if policy == "adaptive" else num_classes * slots_per_class
        self._sample_shape, self._dtype = shape, np.dtype(dtype_name)
        self._num_extras, self._seed = num_extras, seed
        _register(self)

    # -- read-only description ------------------------------------------------------------------
    rank = property(lambda self: self._core.rank, doc="This process's rank in comm.")
    world_size = property(lambda self: self._core.world_size, doc="Number of ranks in comm.")
    num_classes = property(lambda self: self._num_classes)
    slots_per_class = property(lambda self: self._slots_per_class)
    sample_shape = property(lambda self: self._sample_shape, doc="Shape of one sample (tuple).")
    dtype = property(lambda self: self._dtype, doc="Sample dtype (numpy dtype).")
    num_extras = property(lambda self: self._num_extras)
    closed = property(lambda self: self._core.closed)
    policy = property(lambda self: self._policy, doc="'adaptive' or 'fixed'.")
    capacity = property(lambda self: self._capacity, doc="Slots per rank (fixed: K x N).")

    def __repr__(self):
        return (f"cpp_loader.Buffer(policy='{self._policy}', capacity={self._capacity}, "
                f"num_classes={self._num_classes}, slots_per_class="
                f"{self._slots_per_class}, sample_shape={self._sample_shape}, dtype='{self._dtype}', "
                f"num_extras={self._num_extras}, rank={self.rank}/{self.world_size}"
                f"{', closed' if self.closed else ''})")

    # -- insertion and draws --------------------------------------------------------------------
    def add(self, x, y, extras=None) -> np.ndarray:
        """Local. Offer n samples to this rank's class-balanced reservoir.

        x: (n, *sample_shape) of the buffer dtype, C-contiguous; y: (n,) int64 or int32, in
        [0, num_classes) (fixed) or >= 0 (adaptive); extras: (n, num_extras) float32,
        required iff num_extras > 0. numpy arrays or CPU tensors (read through DLPack, without a copy).

        Returns an int64 array of shape (n,): the local slot where each sample was stored, or
        -1 where the reservoir did not keep it. When several samples of this call land in the
        same slot, only the last one (the one held) keeps the slot number; the others get -1.
        Raises ValueError (LabelError for labels) with nothing stored."""
        core = self._open()
        return core.add(_array(x, "x"), _array(y, "y"), _array(extras, "extras"))

    def read(self, slots, out_x, out_y, out_extras=None) -> None:
        """Local. Copy the contents of local ``slots`` (1-D int64 or int32 of length m, a numpy
        array or CPU tensor; a strided view is copied) into rows [0, m) of out_x, out_y and
        out_extras (the rules of sample()'s outputs: at least m rows; out_extras required iff
        num_extras > 0). Safe while a draw is in flight.

        Raises ValueError ``slots must be in [0, capacity), got s`` or ``slot s is empty``,
        with nothing written."""
        core = self._open()
        core.read(_slots(slots), *self._outputs(out_x, out_y, out_extras)[:3])

    def write_extras(self, slots, extras) -> None:
        """Local. Rewrite the extras of local ``slots`` (as for read(), length m) with
        the rows of ``extras`` ((m, num_extras) float32); a slot given twice gets its last row.

        Written under the same exclusive lock as add(), so a rank drawing this slot never reads
        a half-rewritten row. Raises ValueError ``this buffer stores no extras (num_extras=0)``,
        ``slots must be in [0, capacity), got s`` or ``slot s is empty``, with nothing written."""
        core = self._open()
        core.write_extras(_slots(slots), _array(extras, "extras"))

    def sample(self, r, out_x, out_y, out_extras=None, out_where=None) -> int:
        """Collective, synchronous: draw min(r, global filled) representatives, ends with a barrier.

        Returns n; rows [0, n) of out_x (>= r rows, buffer dtype), out_y (int64) and out_extras
        ((>= r, num_extras) float32, iff num_extras > 0) are filled, grouped by owner rank.
        out_where (optional, (>= r, 2) int64) receives, for each row, (owner rank, slot on
        that rank): where to send rewritten extras back to (write_extras() on the owner)."""
        core = self._open()
        return core.sample(operator.index(r), *self._outputs(out_x, out_y, out_extras, out_where))

    def start(self, r, out_x, out_y, out_extras=None, out_where=None) -> None:
        """Collective, asynchronous: like sample(), on the background thread; finish with wait().

        The buffer keeps references to the output arrays until wait() returns; do not read or
        write them before. One draw at a time."""
        core = self._open()
        outputs = self._outputs(out_x, out_y, out_extras, out_where)
        core.start(operator.index(r), *outputs)
        self._pending = (outputs, (out_x, out_y, out_extras, out_where))  # alive while the thread writes

    def wait(self) -> int:
        """Wait (GIL released) for the draw started by start(); returns n, or re-raises its error."""
        core = self._open()
        try:
            return core.wait()
        finally:
            if not core.in_flight:
                self._pending = None

    def stats(self) -> dict:
        """Counters: classes (labels, in the order of the per-class lists), seen/filled per class,
        filled and capacity (this rank), filled_per_rank and
        global_filled (as of the last draw), last_draw_seconds, bytes_read_remote/local, draws."""
        return self._open().stats()

    # -- checkpoints ----------------------------------------------------------------------------
    def state(self) -> dict:
        """This rank's slice as a picklable dict (numpy arrays, scalars, strings): slot contents,
        counters and both generator states. Not while a draw is in flight."""
        state = self._open().save()
        state.update(kind=STATE_KIND, **self._description(), seed=self._seed, rank=self.rank,
                     world_size=self.world_size)
        return state

    def load_state(self, state) -> None:
        """Local. Restore exactly what state() saved (of a buffer of the same kind and shape)."""
        core = self._open()
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a dict from Buffer.state(), got {type(state).__name__}")
        if state.get("kind") != STATE_KIND:
            raise ValueError(f"state is of kind {state.get('kind')!r}, expected {STATE_KIND!r}")
        keys = ("samples", "labels", "extras", "classes", "seen_per_class", "filled_per_class",
                "insertion_generator", "draw_generator")
        missing = [k for k in (*self._description(), *keys) if k not in state]
        if missing:
            raise ValueError(f"state lacks {', '.join(missing)}")
        theirs = {k: state[k] for k in self._description()}
        theirs["sample_shape"] = tuple(theirs["sample_shape"])
        differs = [f"{k}: state has {theirs[k]!r}, buffer has {mine!r}"
                   for k, mine in self._description().items() if theirs[k] != mine]
        if differs:
            raise ValueError("state does not fit this buffer: " + "; ".join(differs))
        arrays = [np.ascontiguousarray(state[k]) for k in keys[:3]]
        counters = [np.ascontiguousarray(state[k], dtype=np.int64) for k in keys[3:6]]
        core.load(*arrays, *counters, str(state["insertion_generator"]), str(state["draw_generator"]))

    # -- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        """Collective: wait for a draw in flight, stop the thread, free the window. Idempotent."""
        if not self._core.closed:
            self._core.close()
        self._pending = None
        _unregister(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        core = getattr(self, "_core", None)
        if core is not None and not core.closed and core.in_flight:
            try:
                core.wait()  # the thread may still write into the arrays that die with us
            except Exception:  # noqa: BLE001 - nobody can receive it any more
                pass

    # -- helpers --------------------------------------------------------------------------------
    def _open(self):
        if self._core.closed:
            raise RuntimeError(CLOSED)
        return self._core

    def _description(self) -> dict:
        return dict(num_classes=self._num_classes, slots_per_class=self._slots_per_class,
                    sample_shape=self._sample_shape, dtype=self._dtype.name, num_extras=self._num_extras,
                    policy=self._policy, capacity=self._capacity)

    def _outputs(self, out_x, out_y, out_extras, out_where=None):
        return (_array(out_x, "out_x"), _array(out_y, "out_y"), _array(out_extras, "out_extras"),
                _array(out_where, "out_where"))


def _array(obj, name):
    """numpy arrays as they are; CPU tensors (anything with __dlpack__) as numpy views."""
    if obj is None or isinstance(obj, np.ndarray):
        return obj
    device = getattr(obj, "__dlpack_device__", None)
    if device is None:
        raise TypeError(f"{name} must be a numpy array or a CPU tensor, got {type(obj).__name__}")
    device_type, device_id = device()
    if int(device_type) != _DLPACK_CPU:
        where = getattr(obj, "device", f"DLPack device ({int(device_type)}, {device_id})")
        raise ValueError(f"{name} is on {where}: it must be on the CPU (use .cpu())")
    try:
        return np.from_dlpack(obj)
    except (BufferError, RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(f"{name} cannot be read as an array without a copy: {exc}") from exc


def _slots(obj):
    """A slot-index array as _array gives it, made contiguous: a view such as where[:, 1] is
    copied (m integers), not refused."""
    slots = _array(obj, "slots")
    return np.ascontiguousarray(slots) if slots is not None else None


def _convert(num_classes, slots_per_class, sample_shape, dtype, num_extras, seed, capacity, policy):
    """The arguments as _core.Buffer takes them -- ints or None, a tuple of ints, the dtype's and
    the policy's names -- and "" or what could not be converted. Only types here: every rule
    about the values lives in C++ (Arguments::parse and Config::problem, config.cpp). A problem
    found here travels to that collective constructor too, so every rank raises it."""
    problems = []

    def is_int(value):
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)

    def integer(value, name, required=False):
        if value is None and not required:
            return None
        if not is_int(value):
            problems.append(f"{name} must be an int, got {value!r}")
            return None
        return int(value)

    if policy is None:
        policy = "adaptive" if capacity is not None else "fixed"
    shape = (sample_shape,) if is_int(sample_shape) else sample_shape
    if shape is not None:
        entries = list(shape) if isinstance(shape, Iterable) and not isinstance(shape, (str, bytes)) else [None]
        if all(is_int(d) for d in entries):
            shape = tuple(int(d) for d in entries)
        else:
            problems.append(f"sample_shape must be a tuple of ints, got {sample_shape!r}")
            shape = None
    try:
        dt = np.dtype(dtype)
        dtype_name = dt.name if dt == np.dtype(dt.name) else dt.str  # '>f4': not native, refused
    except (TypeError, ValueError):
        dtype_name = str(dtype)
    return ((integer(num_classes, "num_classes"), integer(slots_per_class, "slots_per_class"), shape,
             dtype_name, integer(num_extras, "num_extras", required=True), integer(seed, "seed", required=True),
             integer(capacity, "capacity"), str(policy)),
            "; ".join(problems))


# -- closing at exit: before mpi4py finalizes MPI, in creation order (the same on every rank) --
_open_buffers = weakref.WeakValueDictionary()
_ids = itertools.count()


def _register(buffer):
    buffer._registry_id = next(_ids)
    _open_buffers[buffer._registry_id] = buffer


def _unregister(buffer):
    _open_buffers.pop(getattr(buffer, "_registry_id", None), None)


@atexit.register
def _close_open_buffers():
    if getattr(sys, "last_value", None) is not None or MPI.Is_finalized():
        return  # dying of an exception: a collective close could wait forever for the others
    for key in sorted(_open_buffers.keys()):
        buffer = _open_buffers.get(key)
        if buffer is not None:
            try:
                buffer.close()
            except Exception:  # noqa: BLE001 - at exit there is no one left to tell
                pass

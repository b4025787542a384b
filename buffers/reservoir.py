"""The rules every plain-Python buffer shares: validation, the slice, reservoir insertion.

Three roles, as in the native buffer:

* ``ClassBalancedReservoir`` -- the *policy*: given the labels of an incoming batch, which
  slot (if any) each sample goes to. Pure decision plus the per-class counters.
* ``SliceBuffer`` -- the *storage* of one rank's slice (K x N slots of samples and extras)
  and the whole public surface (checks, ``add``, ``start``/``wait``, ``stats``, ``state``,
  ``close``). Subclasses only say how a draw picks and fetches slots (``_draw``).
* the checks (``as_array``, ``check_*``), so an error reads the same whatever the buffer.

Insertion rule, per rank and per class c (N = slots_per_class): while ``filled_c < N`` the
sample goes to slot ``c*N + filled_c``; afterwards ``j`` is uniform in ``[0, seen_c)``
(``seen_c`` counting this sample) and the sample replaces slot ``c*N + j`` when ``j < N``. So
every sample of class c seen so far is held with probability ``N / seen_c``.

``j`` comes from one double per post-fill sample (``floor(u * seen_c)``), so the buffer depends
on the seed and the order of the data only, not on how the data was cut into batches.
"""
import numbers
import time

import numpy as np

CLOSED = "buffer is closed"
DTYPES = ("uint8", "float32", "float16")
LABEL_DTYPES = (np.dtype(np.int64), np.dtype(np.int32))
DLPACK_DEVICES = {2: "CUDA", 4: "OpenCL", 7: "Vulkan", 8: "Metal", 10: "ROCm", 14: "oneAPI"}


class LabelError(IndexError, ValueError):
    """A label outside [0, num_classes): an IndexError and a ValueError, catch either."""


# --------------------------------------------------------------------------- checks

def normalize_dtype(dtype) -> np.dtype:
    """'uint8' | 'float32' | 'float16' or the numpy equivalents -> np.dtype."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported; use one of {', '.join(DTYPES)}")
    return dt


def as_array(obj, name: str) -> np.ndarray:
    """A numpy view of `obj` (numpy array or CPU tensor through DLPack), never a copy."""
    if isinstance(obj, np.ndarray):
        return obj
    device = getattr(obj, "__dlpack_device__", None)
    if device is None:
        raise TypeError(f"{name} must be a numpy array or a CPU tensor, got {type(obj).__name__}")
    device_type = int(device()[0])
    if device_type != 1:  # kDLCPU
        where = DLPACK_DEVICES.get(device_type, f"DLPack device type {device_type}")
        raise ValueError(f"{name} is a {where} tensor; the buffer works on host memory: "
                         f"pass a CPU tensor (e.g. {name}.cpu())")
    if getattr(obj, "requires_grad", False):
        obj = obj.detach()
    try:
        return np.from_dlpack(obj)
    except (BufferError, TypeError, RuntimeError) as exc:
        raise ValueError(f"{name} cannot be read through DLPack: {exc}") from exc


def _check_rows(arr, name, dtype, row_shape, rows=None, min_rows=None, writable=False):
    if arr.dtype != dtype:
        raise ValueError(f"{name} has dtype {arr.dtype}, expected {dtype}")
    if arr.ndim != 1 + len(row_shape) or tuple(arr.shape[1:]) != tuple(row_shape):
        want = ", ".join(["n", *map(str, row_shape)])
        raise ValueError(f"{name} has shape {tuple(arr.shape)}, expected ({want})")
    if rows is not None and arr.shape[0] != rows:
        raise ValueError(f"{name} has {arr.shape[0]} rows but x has {rows}")
    if min_rows is not None and arr.shape[0] < min_rows:
        raise ValueError(f"{name} has room for {arr.shape[0]} rows, fewer than r={min_rows}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name} is not C-contiguous; pass np.ascontiguousarray({name}) "
                         f"or {name}.contiguous()")
    if writable and not arr.flags.writeable:
        raise ValueError(f"{name} is read-only; the draw writes into it")


def _check_labels(y, name, n, num_classes, writable=False):
    if writable and y.dtype != LABEL_DTYPES[0]:
        raise ValueError(f"{name} has dtype {y.dtype}, expected int64")
    if y.dtype not in LABEL_DTYPES:
        raise ValueError(f"{name} has dtype {y.dtype}, expected int64 (or int32)")
    if y.ndim != 1:
        raise ValueError(f"{name} has shape {tuple(y.shape)}, expected a 1-d array")
    if writable:
        if y.shape[0] < n:
            raise ValueError(f"{name} has room for {y.shape[0]} rows, fewer than r={n}")
        if not y.flags.writeable:
            raise ValueError(f"{name} is read-only; the draw writes into it")
        return
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} labels but x has {n} samples")
    if n:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            at = int(np.flatnonzero((y < 0) | (y >= num_classes))[0])
            raise LabelError(f"label {int(y[at])} (sample {at}) is outside [0, {num_classes})")


def _positive_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def normalize_shape(sample_shape) -> tuple:
    shape = (sample_shape,) if isinstance(sample_shape, numbers.Integral) else tuple(sample_shape)
    if not shape or any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1
                        for d in shape):
        raise ValueError(f"sample_shape must be a non-empty tuple of positive integers, "
                         f"got {sample_shape!r}")
    return tuple(int(d) for d in shape)


# --------------------------------------------------------------------------- policy

class ClassBalancedReservoir:
    """Which slot each incoming sample takes; counts seen/filled per class. No data."""

    def __init__(self, num_classes: int, slots_per_class: int, rng: np.random.Generator):
        self.num_classes = num_classes
        self.slots_per_class = slots_per_class
        self.rng = rng
        self.seen = np.zeros(num_classes, dtype=np.int64)
        self.filled = np.zeros(num_classes, dtype=np.int64)

    def place(self, y: np.ndarray):
        """-> (src, dst): sample src[i] of the batch goes to slot dst[i]; a slot taken twice
        in one batch goes to the later sample, exactly as one-at-a-time insertion would."""
        K, N = self.num_classes, self.slots_per_class
        y = y.astype(np.int64, copy=False)
        n = len(y)
        counts = np.bincount(y, minlength=K)
        order = np.argsort(y, kind="stable")
        first = np.cumsum(counts) - counts
        rank_in_class = np.empty(n, dtype=np.int64)
        rank_in_class[order] = np.arange(n) - first[y[order]]
        seen = self.seen[y] + rank_in_class + 1  # seen_c including this sample
        slots = y * N + seen - 1  # right for the filling samples
        late = np.flatnonzero(seen > N)
        if len(late):
            s = seen[late]
            j = np.minimum((self.rng.random(len(late)) * s).astype(np.int64), s - 1)
            slots[late] = np.where(j < N, y[late] * N + j, -1)
        self.seen += counts
        np.minimum(self.seen, N, out=self.filled)
        if not len(late):
            return None, slots  # every sample, in order: the fast path
        src = np.flatnonzero(slots >= 0)
        dst = slots[src]
        if len(dst) > 1:
            _, first_from_end = np.unique(dst[::-1], return_index=True)
            last = len(dst) - 1 - first_from_end
            src, dst = src[last], dst[last]
        return src, dst


# --------------------------------------------------------------------------- buffer base

class SliceBuffer:
    """Common surface of the plain-Python buffers; see buffers/__init__.py for the interface.

    Subclasses set ``KIND`` and implement ``_draw(r, out_x, out_y, out_extras) -> n``."""

    KIND = "buffers.SliceBuffer/1"

    def __init__(self, num_classes, slots_per_class, sample_shape, dtype="uint8",
                 num_extras=0, seed=0, comm=None):
        from mpi4py import MPI

        self._MPI = MPI
        comm = MPI.COMM_WORLD if comm is None else comm
        error, config = None, None
        try:
            config = dict(num_classes=_positive_int(num_classes, "num_classes"),
                          slots_per_class=_positive_int(slots_per_class, "slots_per_class"),
                          sample_shape=normalize_shape(sample_shape),
                          dtype=normalize_dtype(dtype).name,
                          num_extras=_positive_int(num_extras, "num_extras", minimum=0))
            seed = _positive_int(seed, "seed", minimum=0)
        except (TypeError, ValueError) as exc:
            error = exc
        # Collective even when this rank's arguments are bad, so no rank is left waiting.
        gathered = comm.allgather(repr(error) if error else config)
        if error is not None:
            raise error
        for peer, other in enumerate(gathered):
            if isinstance(other, str):
                raise ValueError(f"rank {peer} could not build its buffer: {other}")
        for key in config:
            values = [other[key] for other in gathered]
            if any(v != values[0] for v in values):
                per_rank = ", ".join(f"rank {p}: {v}" for p, v in enumerate(values))
                raise ValueError(f"{key} differs across ranks ({per_rank}); "
                                 f"every rank must pass the same shapes")

        self._comm_in = comm
        self._rank, self._world_size = comm.Get_rank(), comm.Get_size()
        self._num_classes = config["num_classes"]
        self._slots_per_class = config["slots_per_class"]
        self._sample_shape = config["sample_shape"]
        self._dtype = np.dtype(config["dtype"])
        self._num_extras = config["num_extras"]
        self._seed = seed
        slots = self._num_classes * self._slots_per_class
        # Written now, so the pages are touched here and not during the first inserts.
        self._samples = np.empty((slots, *self._sample_shape), dtype=self._dtype)
        self._samples.fill(0)
        self._extras = (np.zeros((slots, self._num_extras), dtype=np.float32)
                        if self._num_extras else None)
        self._sample_bytes = self._samples[0].nbytes
        self._extras_bytes = 4 * self._num_extras
        insert_seq, draw_seq = np.random.SeedSequence([seed, self._rank]).spawn(2)
        self._policy = ClassBalancedReservoir(self._num_classes, self._slots_per_class,
                                              np.random.default_rng(insert_seq))
        self._draw_rng = np.random.default_rng(draw_seq)
        self._counters = dict(filled_per_rank=[0] * self._world_size, global_filled=0,
                              last_draw_seconds=0.0, bytes_read_remote=0,
                              bytes_read_local=0, draws=0)
        self._pending = None
        self._closed = False

    # ----------------------------------------------------------------- properties
    rank = property(lambda self: self._rank)
    world_size = property(lambda self: self._world_size)
    num_classes = property(lambda self: self._num_classes)
    slots_per_class = property(lambda self: self._slots_per_class)
    sample_shape = property(lambda self: self._sample_shape)
    dtype = property(lambda self: self._dtype)
    num_extras = property(lambda self: self._num_extras)
    closed = property(lambda self: self._closed)

    def __repr__(self):
        return (f"{type(self).__name__}(rank={self._rank}/{self._world_size}, "
                f"K={self._num_classes}, N={self._slots_per_class}, "
                f"shape={self._sample_shape}, dtype={self._dtype}, extras={self._num_extras}, "
                f"filled={int(self._policy.filled.sum())}{', closed' if self._closed else ''})")

    def _check_open(self):
        if self._closed:
            raise RuntimeError(CLOSED)

    # ----------------------------------------------------------------- insertion
    def add(self, x, y, extras=None) -> None:
        """Local. Offer a batch to the class-balanced reservoir (see the module docstring).

        x: (n, *sample_shape) in the buffer's dtype, C-contiguous; y: (n,) int64/int32 in
        [0, num_classes); extras: (n, num_extras) float32 iff num_extras > 0. numpy arrays
        or CPU tensors. Example: ``buf.add(images_u8, labels)``."""
        self._check_open()
        x = as_array(x, "x")
        _check_rows(x, "x", self._dtype, self._sample_shape)
        n = x.shape[0]
        y = as_array(y, "y")
        _check_labels(y, "y", n, self._num_classes)
        if self._num_extras:
            if extras is None:
                e = self._num_extras
                raise ValueError(f"extras missing: this buffer stores {e} extras per sample; "
                                 f"pass an (n, {e}) float32 array")
            extras = as_array(extras, "extras")
            _check_rows(extras, "extras", np.dtype(np.float32), (self._num_extras,), rows=n)
        elif extras is not None:
            raise ValueError("extras given but this buffer was built with num_extras=0")
        if n == 0:
            return
        src, dst = self._policy.place(y)
        if src is None:
            self._samples[dst] = x
            if self._extras is not None:
                self._extras[dst] = extras
        elif len(dst):
            self._samples[dst] = x[src]
            if self._extras is not None:
                self._extras[dst] = extras[src]

    # ----------------------------------------------------------------- draws
    def _check_outputs(self, r, out_x, out_y, out_extras):
        if isinstance(r, bool) or not isinstance(r, numbers.Integral) or r <= 0:
            raise ValueError(f"r must be a positive number of representatives, got {r!r}")
        r = int(r)
        out_x = as_array(out_x, "out_x")
        _check_rows(out_x, "out_x", self._dtype, self._sample_shape, min_rows=r, writable=True)
        out_y = as_array(out_y, "out_y")
        _check_labels(out_y, "out_y", r, self._num_classes, writable=True)
        if self._num_extras:
            if out_extras is None:
                raise ValueError(f"out_extras missing: this buffer stores {self._num_extras} "
                                 f"extras per sample")
            out_extras = as_array(out_extras, "out_extras")
            _check_rows(out_extras, "out_extras", np.dtype(np.float32), (self._num_extras,),
                        min_rows=r, writable=True)
        elif out_extras is not None:
            raise ValueError("out_extras given but this buffer was built with num_extras=0")
        return r, out_x, out_y, out_extras

    def sample(self, r, out_x, out_y, out_extras=None) -> int:
        """Draw n = min(r, available) distinct representatives into rows [0, n) of the
        outputs; return n. Collective for the global buffer. Example:
        ``n = buf.sample(56, xs, ys)``."""
        self._check_open()
        if self._pending is not None:
            raise RuntimeError("a draw started with start() is pending: call wait() first")
        r, out_x, out_y, out_extras = self._check_outputs(r, out_x, out_y, out_extras)
        t0 = time.perf_counter()
        n, local = self._draw(r, out_x, out_y, out_extras)
        self._counters["last_draw_seconds"] = time.perf_counter() - t0
        row = self._sample_bytes + self._extras_bytes
        self._counters["bytes_read_local"] += local * row
        self._counters["bytes_read_remote"] += (n - local) * row
        self._counters["draws"] += 1
        return n

    def start(self, r, out_x, out_y, out_extras=None) -> None:
        """Begin a draw into the outputs (kept alive by the caller until wait()). The Python
        buffers do the whole draw here; wait() only hands back n."""
        self._check_open()
        if self._pending is not None:
            raise RuntimeError("start() called twice without wait(): call wait() first")
        self._pending = self.sample(r, out_x, out_y, out_extras)

    def wait(self) -> int:
        """Finish the draw begun by start(); return n."""
        self._check_open()
        if self._pending is None:
            raise RuntimeError("wait() without a pending start()")
        n, self._pending = self._pending, None
        return n

    def _draw(self, r, out_x, out_y, out_extras):
        """-> (n, how many of the n came from this rank's own slice)."""
        raise NotImplementedError

    def _slots_of(self, filled, picks):
        """Indices into a slice whose per-class fill counts are `filled` -> slot numbers."""
        cum = np.cumsum(filled)
        cls = np.searchsorted(cum, picks, side="right")
        return cls * self._slots_per_class + picks - (cum[cls] - filled[cls])

    # ----------------------------------------------------------------- stats and state
    def stats(self) -> dict:
        self._check_open()
        filled = self._policy.filled
        c = self._counters
        return {"seen_per_class": self._policy.seen.tolist(),
                "filled_per_class": filled.tolist(),
                "filled": int(filled.sum()),
                "filled_per_rank": list(c["filled_per_rank"]),
                "global_filled": int(c["global_filled"]),
                "last_draw_seconds": float(c["last_draw_seconds"]),
                "bytes_read_remote": int(c["bytes_read_remote"]),
                "bytes_read_local": int(c["bytes_read_local"]),
                "draws": int(c["draws"])}

    def _shape_fields(self) -> dict:
        return {"num_classes": self._num_classes, "slots_per_class": self._slots_per_class,
                "sample_shape": self._sample_shape, "dtype": self._dtype.name,
                "num_extras": self._num_extras}

    def state(self) -> dict:
        """Everything needed to continue exactly: slot contents, counters, generator states."""
        self._check_open()
        return {"kind": self.KIND, **self._shape_fields(),
                "rank": self._rank, "world_size": self._world_size, "seed": self._seed,
                "samples": self._samples.copy(),
                "extras": None if self._extras is None else self._extras.copy(),
                "seen": self._policy.seen.copy(), "filled": self._policy.filled.copy(),
                "insert_rng": self._policy.rng.bit_generator.state,
                "draw_rng": self._draw_rng.bit_generator.state,
                "counters": {k: (list(v) if isinstance(v, list) else v)
                             for k, v in self._counters.items()}}

    def load_state(self, state) -> None:
        """Restore what state() returned (by a buffer of the same kind and shapes)."""
        self._check_open()
        if not isinstance(state, dict) or "kind" not in state:
            raise ValueError("state is not a buffer state (no 'kind' marker)")
        if state["kind"] != self.KIND:
            raise ValueError(f"state kind {state['kind']!r} does not match this buffer's "
                             f"{self.KIND!r}")
        for key, mine in self._shape_fields().items():
            theirs = state.get(key)
            if key == "sample_shape" and theirs is not None:
                theirs = tuple(theirs)
            if theirs != mine:
                raise ValueError(f"state has {key}={theirs!r}, this buffer has {key}={mine!r}")
        seen = np.asarray(state["seen"], dtype=np.int64)
        if seen.shape != (self._num_classes,) or np.asarray(state["samples"]).shape != \
                self._samples.shape:
            raise ValueError("state arrays do not match the buffer's shapes")
        np.copyto(self._samples, state["samples"])
        if self._extras is not None:
            np.copyto(self._extras, state["extras"])
        self._policy.seen[:] = seen
        np.minimum(seen, self._slots_per_class, out=self._policy.filled)
        self._policy.rng.bit_generator.state = state["insert_rng"]
        self._draw_rng.bit_generator.state = state["draw_rng"]
        counters = dict(state["counters"])
        counters["filled_per_rank"] = list(counters["filled_per_rank"])
        self._counters.update(counters)
        self._pending = None

    # ----------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Release the buffer (idempotent). Collective for the global buffer, as for the
        native one: every rank calls it."""
        if self._closed:
            return
        self._closed = True
        self._pending = None
        self._release()
        self._samples = self._extras = None

    def _release(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

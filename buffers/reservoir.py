"""The rules every plain-Python buffer shares: validation, the slice, reservoir insertion.

Three roles, as in the native buffer:

* the *policy*: given the labels of an incoming batch, which slot (if any) each sample goes
  to. Pure decision plus the per-class counters. ``AdaptiveReservoir`` (the default: M slots
  shared by the classes seen so far) or ``ClassBalancedReservoir`` (``policy='fixed'``: K x N);
* ``SliceBuffer`` -- the *storage* of one rank's slice (samples, labels and extras per slot)
  and the whole public surface (checks, ``add``, ``start``/``wait``, ``stats``, ``state``,
  ``close``). Subclasses only say how a draw picks and fetches slots (``_draw``).
* the checks (``as_array``, ``check_*``), so an error reads the same whatever the buffer.

Fixed insertion rule, per rank and per class c (N = slots_per_class): while ``filled_c < N`` the
sample goes to slot ``c*N + filled_c``; afterwards ``j`` is uniform in ``[0, seen_c)``
(``seen_c`` counting this sample) and the sample replaces slot ``c*N + j`` when ``j < N``. So
every sample of class c seen so far is held with probability ``N / seen_c``.

Adaptive insertion rule (the same as the native buffer's, cpp_loader/README.md): M slots per
rank; with k classes seen, the i-th class to arrive has quota ``M // k + (i < M % k)``. A
sample of class c (``seen_c`` counting it, ``held_c`` slots of c): (1) while the slice is not
full it takes the next free slot; (2) when full and ``held_c < quota_c``, the class most over
its quota (ties: the earliest) evicts one of its samples uniformly at random and c takes that
slot; (3) otherwise ``j = floor(u * seen_c)`` and it replaces the j-th slot of c (ascending)
when ``j < held_c``. Every sample of c seen so far is held with probability held_c / seen_c.

``j`` comes from one double per decision (``floor(u * seen_c)``), so the buffer depends
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
    """A label outside [0, num_classes) (or negative): an IndexError and a ValueError, catch either."""


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
        if num_classes is not None and (lo < 0 or hi >= num_classes):
            at = int(np.flatnonzero((y < 0) | (y >= num_classes))[0])
            raise LabelError(f"label {int(y[at])} (sample {at}) is outside [0, {num_classes})")
        if lo < 0:
            at = int(np.flatnonzero(y < 0)[0])
            raise LabelError(f"label {int(y[at])} (sample {at}) is negative: labels are integers >= 0")


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
        self.stride = slots_per_class  # the sampler's block b starts at slot b * stride
        self.rng = rng
        self.seen = np.zeros(num_classes, dtype=np.int64)
        self.filled = np.zeros(num_classes, dtype=np.int64)
        self.filled_total = 0

    def blocks(self) -> np.ndarray:
        """Fill counts of the blocks of consecutive filled slots: one per class."""
        return self.filled

    def counters(self):
        """(classes, seen, filled) per class, in label order."""
        return np.arange(self.num_classes, dtype=np.int64), self.seen.copy(), self.filled.copy()

    def restore(self, labels, classes, seen, filled):
        K, N = self.num_classes, self.slots_per_class
        if not np.array_equal(classes, np.arange(K)) or seen.shape != (K,) or (seen < 0).any():
            raise ValueError(f"state counters do not describe classes 0..{K - 1}")
        if not np.array_equal(filled, np.minimum(seen, N)):
            raise ValueError("state counters are inconsistent: filled != min(seen, slots_per_class)")
        # class c owns slots [c*N, (c+1)*N): its first `filled` hold label c, the rest are empty
        want = np.where(np.arange(N)[None, :] < filled[:, None], np.arange(K)[:, None], -1).reshape(-1)
        wrong = np.flatnonzero(np.asarray(labels).reshape(-1) != want)
        if len(wrong):
            s = int(wrong[0])
            raise ValueError(f"state labels are inconsistent: slot {s} holds label {int(labels[s])}, "
                             f"expected {int(want[s])}")
        self.seen[:] = seen
        self.filled[:] = filled
        self.filled_total = int(filled.sum())

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
        self.filled_total = int(self.filled.sum())
        if not len(late):
            return None, slots  # every sample, in order: the fast path
        return last_write_wins(slots)


def last_write_wins(slots: np.ndarray):
    """(src, dst) of the samples that keep a slot: of several samples sent to one slot in a
    batch (slot -1: not kept), the later one, exactly as one-at-a-time insertion would."""
    src = np.flatnonzero(slots >= 0)
    dst = slots[src]
    if len(dst) > 1:
        _, first_from_end = np.unique(dst[::-1], return_index=True)
        last = len(dst) - 1 - first_from_end
        src, dst = src[last], dst[last]
    return src, dst


class AdaptiveReservoir:
    """The adaptive policy (module docstring): M slots shared by the classes seen so far,
    labels discovered as they come. Which slot each incoming sample takes; no data."""

    def __init__(self, capacity: int, rng: np.random.Generator):
        self.capacity = capacity
        self.stride = capacity  # one block, [0, filled_total)
        self.rng = rng
        self.classes: list[int] = []        # labels, in order of arrival
        self.index: dict[int, int] = {}     # label -> position in classes
        self.seen: list[int] = []
        self.slots: list[list[int]] = []    # per class, ascending
        self.filled_total = 0
        self._table = None  # _steady's arrays, while rules 1-2 leave the slots as they are

    def quota(self, i: int) -> int:
        k = len(self.classes)
        return self.capacity // k + (i < self.capacity % k)

    def blocks(self) -> np.ndarray:
        return np.array([self.filled_total], dtype=np.int64)

    def counters(self):
        """(classes, seen, filled) per class, in order of arrival."""
        return (np.array(self.classes, dtype=np.int64), np.array(self.seen, dtype=np.int64),
                np.array([len(s) for s in self.slots], dtype=np.int64))

    def _most_over_quota(self) -> int:
        excess = [len(s) - self.quota(i) for i, s in enumerate(self.slots)]
        return int(np.argmax(excess))  # the first of the largest

    def _steady(self, y: np.ndarray):
        """The whole batch under rule 3 (full slice, known classes, none below its quota),
        vectorised: the same random numbers, in the same order, as one sample at a time; None
        when some sample needs rule 1 or 2."""
        if self.filled_total < self.capacity or not self.classes:
            return None
        if self._table is None:  # rebuilt only after rules 1-2 or a restore changed the slots
            k = len(self.classes)
            held = np.array([len(s) for s in self.slots], dtype=np.int64)
            table = np.zeros((k, max(1, int(held.max()))), dtype=np.int64)
            for c, slots in enumerate(self.slots):
                table[c, :len(slots)] = slots
            keys = np.array(self.classes, dtype=np.int64)
            order = np.argsort(keys)
            below = held < np.array([self.quota(c) for c in range(k)])
            self._table = (keys[order], order, held, table, below)
        keys, order, held, table, below = self._table
        at = np.minimum(np.searchsorted(keys, y), len(keys) - 1)
        if not np.array_equal(keys[at], y):
            return None  # a new class
        cls = order[at]
        if below[cls].any():
            return None
        counts = np.bincount(cls, minlength=len(keys))
        by_class = np.argsort(cls, kind="stable")
        rank = np.empty(len(cls), dtype=np.int64)
        rank[by_class] = np.arange(len(cls)) - (np.cumsum(counts) - counts)[cls[by_class]]
        seen = np.asarray(self.seen, dtype=np.int64)
        after = seen[cls] + rank + 1  # seen_c counting this sample
        j = np.minimum((self.rng.random(len(cls)) * after).astype(np.int64), after - 1)
        keep = j < held[cls]
        dst = np.full(len(cls), -1, dtype=np.int64)
        dst[keep] = table[cls[keep], j[keep]]
        self.seen = (seen + counts).tolist()
        return dst

    def place(self, y: np.ndarray):
        """-> (src, dst) as ClassBalancedReservoir.place (the later sample wins a slot)."""
        dst = self._filling(y)
        if dst is not None:
            return None, dst  # every sample, in order: the fast path
        dst = self._steady(y)
        if dst is None:
            dst = self._one_by_one(y)
        return last_write_wins(dst)

    def _filling(self, y: np.ndarray):
        """The whole batch under rule 1 (it fits in the free slots), vectorised; else None."""
        if self.filled_total + len(y) > self.capacity:
            return None
        labels = y.tolist()
        for label in dict.fromkeys(labels):  # new classes, in order of first appearance
            if label not in self.index:
                self.index[label] = len(self.classes)
                self.classes.append(label)
                self.seen.append(0)
                self.slots.append([])
        cls = np.fromiter(map(self.index.__getitem__, labels), dtype=np.int64, count=len(labels))
        dst = np.arange(self.filled_total, self.filled_total + len(y), dtype=np.int64)
        for c in np.unique(cls).tolist():
            mine = dst[cls == c]
            self.slots[c].extend(mine.tolist())
            self.seen[c] += len(mine)
        self.filled_total += len(y)
        self._table = None
        return dst

    def _one_by_one(self, y: np.ndarray) -> np.ndarray:
        """Rules 1-3 for each sample in turn: its slot, or -1."""
        self._table = None
        dst = np.full(len(y), -1, dtype=np.int64)
        for i, label in enumerate(y.tolist()):
            c = self.index.get(label)
            if c is None:
                c = self.index[label] = len(self.classes)
                self.classes.append(label)
                self.seen.append(0)
                self.slots.append([])
            self.seen[c] += 1
            mine = self.slots[c]
            if self.filled_total < self.capacity:  # (1) the next free slot
                mine.append(self.filled_total)
                dst[i] = self.filled_total
                self.filled_total += 1
            elif len(mine) < self.quota(c):  # (2) a slot of the most over-quota class
                victim = self.slots[self._most_over_quota()]
                slot = victim.pop(min(int(self.rng.random() * len(victim)), len(victim) - 1))
                mine.insert(int(np.searchsorted(mine, slot)), slot)
                dst[i] = slot
            else:  # (3) reservoir within the class
                j = min(int(self.rng.random() * self.seen[c]), self.seen[c] - 1)
                if j < len(mine):
                    dst[i] = mine[j]
        return dst

    def restore(self, labels, classes, seen, filled):
        """Rebuild the per-class slot lists from the slots' labels; ValueError if inconsistent."""
        classes, seen = [int(c) for c in classes], [int(s) for s in seen]
        if len(set(classes)) != len(classes) or any(c < 0 for c in classes) \
                or len(seen) != len(classes) or len(filled) != len(classes):
            raise ValueError("state counters are inconsistent: classes must be distinct labels >= 0, "
                             "with one seen and one filled count each")
        used = np.flatnonzero(labels >= 0)
        total = len(used)
        if total and used[-1] != total - 1:
            raise ValueError("state labels are inconsistent: filled slots must come first")
        index = {c: i for i, c in enumerate(classes)}
        slots = [[] for _ in classes]
        for s, label in enumerate(labels[:total].tolist()):
            if label not in index:
                raise ValueError(f"state labels are inconsistent: slot {s} holds label {label}, "
                                 f"which is not among the classes")
            slots[index[label]].append(s)
        for i, c in enumerate(classes):
            if len(slots[i]) != int(filled[i]) or seen[i] < len(slots[i]):
                raise ValueError(f"state counters are inconsistent for class {c}: seen={seen[i]}, "
                                 f"filled={int(filled[i])}, {len(slots[i])} slots hold it")
        self.classes, self.index, self.seen, self.slots = classes, index, seen, slots
        self.filled_total = total
        self._table = None


# --------------------------------------------------------------------------- buffer base

def _config(num_classes, slots_per_class, sample_shape, dtype, num_extras, capacity, policy):
    """The validated description of a slice (as cpp_loader.Buffer takes it): policy defaults to
    'adaptive' when capacity is given, else 'fixed'."""
    policy = policy if policy is not None else ("adaptive" if capacity is not None else "fixed")
    if policy == "fixed":
        if capacity is not None:
            raise ValueError("capacity is for the adaptive policy; the fixed one has "
                             "num_classes x slots_per_class slots")
        num_classes = _positive_int(num_classes, "num_classes")
        slots_per_class = _positive_int(slots_per_class, "slots_per_class")
        capacity = num_classes * slots_per_class
    elif policy == "adaptive":
        if slots_per_class is not None:
            raise ValueError("slots_per_class is for the fixed policy; the adaptive one shares "
                             "capacity slots among the classes seen")
        if capacity is None:
            raise ValueError("the adaptive policy needs capacity (slots per rank)")
        capacity = _positive_int(capacity, "capacity")
        num_classes = None if num_classes is None else _positive_int(num_classes, "num_classes")
    else:
        raise ValueError(f"policy must be 'adaptive' or 'fixed', got {policy!r}")
    return dict(policy=policy, capacity=capacity, num_classes=num_classes,
                slots_per_class=slots_per_class, sample_shape=normalize_shape(sample_shape),
                dtype=normalize_dtype(dtype).name,
                num_extras=_positive_int(num_extras, "num_extras", minimum=0))


class SliceBuffer:
    """Common surface of the plain-Python buffers; see buffers/__init__.py for the interface.

    Subclasses set ``KIND`` and implement ``_draw(r, out_x, out_y, out_extras) -> n``."""

    KIND = "buffers.SliceBuffer/1"

    def __init__(self, num_classes=None, slots_per_class=None, sample_shape=None, dtype="uint8",
                 num_extras=0, seed=0, comm=None, *, capacity=None, policy=None):
        from mpi4py import MPI

        self._MPI = MPI
        comm = MPI.COMM_WORLD if comm is None else comm
        error, config = None, None
        try:
            config = _config(num_classes, slots_per_class, sample_shape, dtype, num_extras,
                             capacity, policy)
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
        self._policy_name = config["policy"]
        self._capacity = config["capacity"]
        self._num_classes = config["num_classes"]
        self._slots_per_class = config["slots_per_class"]
        self._sample_shape = config["sample_shape"]
        self._dtype = np.dtype(config["dtype"])
        self._num_extras = config["num_extras"]
        self._seed = seed
        slots = self._capacity
        # Written now, so the pages are touched here and not during the first inserts.
        self._samples = np.empty((slots, *self._sample_shape), dtype=self._dtype)
        self._samples.fill(0)
        self._labels = np.full(slots, -1, dtype=np.int64)  # adaptive only; fixed: slot // N
        self._extras = (np.zeros((slots, self._num_extras), dtype=np.float32)
                        if self._num_extras else None)
        self._sample_bytes = self._samples[0].nbytes
        self._extras_bytes = 4 * self._num_extras
        insert_seq, draw_seq = np.random.SeedSequence([seed, self._rank]).spawn(2)
        insert_rng = np.random.default_rng(insert_seq)
        self._policy = (AdaptiveReservoir(slots, insert_rng) if self._policy_name == "adaptive"
                        else ClassBalancedReservoir(self._num_classes, self._slots_per_class,
                                                    insert_rng))
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
    policy = property(lambda self: self._policy_name)
    capacity = property(lambda self: self._capacity)

    def __repr__(self):
        return (f"{type(self).__name__}(rank={self._rank}/{self._world_size}, "
                f"policy={self._policy_name}, capacity={self._capacity}, "
                f"K={self._num_classes}, N={self._slots_per_class}, "
                f"shape={self._sample_shape}, dtype={self._dtype}, extras={self._num_extras}, "
                f"filled={self._policy.filled_total}{', closed' if self._closed else ''})")

    def _check_open(self):
        if self._closed:
            raise RuntimeError(CLOSED)

    # ----------------------------------------------------------------- insertion
    def add(self, x, y, extras=None) -> None:
        """Local. Offer a batch to the class-balanced reservoir (see the module docstring).

        x: (n, *sample_shape) in the buffer's dtype, C-contiguous; y: (n,) int64/int32, in
        [0, num_classes) (fixed, or adaptive with num_classes given) or >= 0; extras: (n, num_extras) float32 iff num_extras > 0. numpy arrays
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
        labels = self._labels if self._policy_name == "adaptive" else None  # fixed: slot // N
        if src is None:
            self._samples[dst] = x
            if labels is not None:
                labels[dst] = y
            if self._extras is not None:
                self._extras[dst] = extras
        elif len(dst):
            self._samples[dst] = x[src]
            if labels is not None:
                labels[dst] = y[src]
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

    def _slots_of(self, blocks, picks):
        """Indices into a slice whose fill counts per block are `blocks` -> slot numbers."""
        cum = np.cumsum(blocks)
        block = np.searchsorted(cum, picks, side="right")
        return block * self._policy.stride + picks - (cum[block] - blocks[block])

    # ----------------------------------------------------------------- stats and state
    def stats(self) -> dict:
        self._check_open()
        classes, seen, filled = self._policy.counters()
        c = self._counters
        return {"classes": classes.tolist(),
                "seen_per_class": seen.tolist(),
                "filled_per_class": filled.tolist(),
                "filled": self._policy.filled_total,
                "capacity": self._capacity,
                "filled_per_rank": list(c["filled_per_rank"]),
                "global_filled": int(c["global_filled"]),
                "last_draw_seconds": float(c["last_draw_seconds"]),
                "bytes_read_remote": int(c["bytes_read_remote"]),
                "bytes_read_local": int(c["bytes_read_local"]),
                "draws": int(c["draws"])}

    def _slot_labels(self) -> np.ndarray:
        """The label of every slot, -1 where empty."""
        if self._policy_name == "adaptive":
            return self._labels.copy()
        N, filled = self._slots_per_class, self._policy.filled
        slot = np.arange(self._capacity)
        return np.where(slot % N < filled[slot // N], slot // N, -1)

    def _draw_labels(self, slots, out):
        """Labels of the given slots of this rank's slice, into `out`."""
        if self._policy_name == "adaptive":
            np.take(self._labels, slots, out=out, mode="clip")
        else:
            np.floor_divide(slots, self._slots_per_class, out=out, casting="unsafe")

    def _shape_fields(self) -> dict:
        return {"num_classes": self._num_classes, "slots_per_class": self._slots_per_class,
                "sample_shape": self._sample_shape, "dtype": self._dtype.name,
                "num_extras": self._num_extras, "policy": self._policy_name,
                "capacity": self._capacity}

    def state(self) -> dict:
        """Everything needed to continue exactly: slot contents, counters, generator states."""
        self._check_open()
        classes, seen, filled = self._policy.counters()
        return {"kind": self.KIND, **self._shape_fields(),
                "rank": self._rank, "world_size": self._world_size, "seed": self._seed,
                "samples": self._samples.copy(), "labels": self._slot_labels(),
                "extras": None if self._extras is None else self._extras.copy(),
                "classes": classes, "seen": seen, "filled": filled,
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
        missing = [k for k in ("samples", "labels", "classes", "seen", "filled", "insert_rng",
                               "draw_rng", "counters") if k not in state]
        if missing:
            raise ValueError(f"state lacks {', '.join(missing)}")
        labels = np.asarray(state["labels"], dtype=np.int64)
        if labels.shape != self._labels.shape or np.asarray(state["samples"]).shape != \
                self._samples.shape:
            raise ValueError("state arrays do not match the buffer's shapes")
        counters = [np.asarray(state[k], dtype=np.int64).reshape(-1) for k in ("classes", "seen", "filled")]
        self._policy.restore(labels, *counters)  # checks them first; raises ValueError
        np.copyto(self._samples, state["samples"])
        np.copyto(self._labels, labels)
        if self._extras is not None:
            np.copyto(self._extras, state["extras"])
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

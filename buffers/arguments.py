"""Argument checks of the plain-Python buffers (the twin of cpp_loader's config.cpp and the
array checks in py_buffer.cpp), with the native buffer's messages word for word, so an error
reads the same whatever the buffer."""
import numbers

import numpy as np

CLOSED = "buffer is closed"
DTYPES = ("uint8", "float32", "float16")
LABEL_DTYPES = (np.dtype(np.int64), np.dtype(np.int32))
FLOAT32 = np.dtype(np.float32)
INT64 = np.dtype(np.int64)


class LabelError(IndexError, ValueError):
    """A label outside [0, num_classes) (or negative): an IndexError and a ValueError, catch either
    (cpp_loader.LabelError is its native twin; importing it here would start MPI)."""


def as_array(obj, name: str) -> np.ndarray:
    """A numpy view of `obj` (numpy array or CPU tensor through DLPack), never a copy."""
    if isinstance(obj, np.ndarray):
        return obj
    device = getattr(obj, "__dlpack_device__", None)
    if device is None:
        raise TypeError(f"{name} must be a numpy array or a CPU tensor, got {type(obj).__name__}")
    device_type, device_id = device()
    if int(device_type) != 1:  # kDLCPU
        where = getattr(obj, "device", f"DLPack device ({int(device_type)}, {device_id})")
        raise ValueError(f"{name} is on {where}: it must be on the CPU (use .cpu())")
    if getattr(obj, "requires_grad", False):
        obj = obj.detach()
    try:
        return np.from_dlpack(obj)
    except (BufferError, RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(f"{name} cannot be read as an array without a copy: {exc}") from exc


def check_array(arr: np.ndarray, name: str, dtype, tail, writable: bool = False) -> int:
    """dtype, trailing shape, C order (and writability); returns the number of rows."""
    if arr.dtype != dtype:
        raise ValueError(f"{name} has dtype {arr.dtype}, expected {np.dtype(dtype).name}")
    if arr.ndim != 1 + len(tail) or tuple(arr.shape[1:]) != tuple(tail):
        want = "(n" + "".join(f", {d}" for d in tail) + (")" if tail else ",)")
        raise ValueError(f"{name} has shape {tuple(arr.shape)}, expected {want}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (got strides of a view); "
                         f"pass np.ascontiguousarray({name})")
    if writable and not arr.flags.writeable:
        raise ValueError(f"{name} is read-only")
    return arr.shape[0]


def check_inputs(config: dict, x, y, extras):
    """add()'s arguments -> numpy views (x, y, extras or None); labels checked as well."""
    x = as_array(x, "x")
    n = check_array(x, "x", config["dtype"], config["sample_shape"])
    y = as_array(y, "y")
    if y.dtype not in LABEL_DTYPES:
        raise ValueError(f"y has dtype {y.dtype}, expected int64 (or int32)")
    if check_array(y, "y", y.dtype, ()) != n:
        raise ValueError(f"y has {y.shape[0]} labels but x has {n} samples")
    extras = _extras(config, extras, "extras", writable=False, rows=n)
    check_labels(y, config["num_classes"])
    return x, y, extras


def check_labels(y: np.ndarray, num_classes) -> None:
    bounded = num_classes is not None
    bad = (y < 0) | (y >= num_classes) if bounded else y < 0
    if len(y) and bad.any():
        at = int(np.flatnonzero(bad)[0])
        which = f"label {int(y[at])} (sample {at})"
        if bounded:
            raise LabelError(f"{which} is outside [0, {num_classes})")
        raise LabelError(f"{which} is negative: labels are integers >= 0")


def check_outputs(config: dict, r, out_x, out_y, out_extras, out_where=None):
    """sample()/start()'s arguments -> (r, numpy views of the outputs)."""
    if isinstance(r, bool) or not isinstance(r, numbers.Integral):
        raise TypeError(f"r must be an int, got {r!r}")
    if r <= 0:
        raise ValueError(f"r must be positive, got {r}")
    out_x = as_array(out_x, "out_x")
    rows = check_array(out_x, "out_x", config["dtype"], config["sample_shape"], writable=True)
    out_y = as_array(out_y, "out_y")
    rows = min(rows, check_array(out_y, "out_y", INT64, (), writable=True))
    out_extras = _extras(config, out_extras, "out_extras", writable=True)
    if out_extras is not None:
        rows = min(rows, out_extras.shape[0])
    if out_where is not None:
        out_where = as_array(out_where, "out_where")
        rows = min(rows, check_array(out_where, "out_where", INT64, (2,), writable=True))
    if rows < r:
        raise ValueError(f"output arrays hold {rows} rows, need at least r={r} "
                         f"(out_x {tuple(out_x.shape)}, out_y {tuple(out_y.shape)})")
    return int(r), out_x, out_y, out_extras, out_where


def check_slots(slots, capacity: int, labels: np.ndarray) -> np.ndarray:
    """read()/write_extras()'s slot numbers: local, in range, and filled."""
    slots = as_array(slots, "slots")
    if slots.dtype not in LABEL_DTYPES or slots.ndim != 1:
        raise ValueError(f"slots must be a 1-d int64 array, got dtype {slots.dtype} and shape {tuple(slots.shape)}")
    slots = slots.astype(np.int64, copy=False)
    bad = (slots < 0) | (slots >= capacity)
    if bad.any():
        raise ValueError(f"slots must be in [0, {capacity}), got {int(slots[np.flatnonzero(bad)[0]])}")
    empty = labels[slots] < 0
    if empty.any():
        raise ValueError(f"slot {int(slots[np.flatnonzero(empty)[0]])} is empty")
    return slots


def _extras(config, extras, name, writable, rows=None):
    e = config["num_extras"]
    if not e:
        if extras is not None:
            raise ValueError(f"{name} given but the buffer has num_extras=0")
        return None
    if extras is None:
        raise ValueError(f"{name} is required (num_extras={e})")
    extras = as_array(extras, name)
    got = check_array(extras, name, FLOAT32, (e,), writable=writable)
    if rows is not None and got != rows:
        raise ValueError(f"{name} has {got} rows but x has {rows} samples")
    return extras


# --------------------------------------------------------------------------- construction

def describe(num_classes, slots_per_class, sample_shape, dtype, num_extras, capacity, policy) -> dict:
    """The validated description of a slice, as cpp_loader.Buffer takes it: policy defaults to
    'adaptive' when capacity is given, else 'fixed'. ValueError "invalid Buffer arguments: ..."
    with the native buffer's wording."""
    try:
        return _describe(num_classes, slots_per_class, sample_shape, dtype, num_extras, capacity, policy)
    except ValueError as exc:
        raise ValueError(f"invalid Buffer arguments: {exc}") from None


def _describe(num_classes, slots_per_class, sample_shape, dtype, num_extras, capacity, policy) -> dict:
    policy = policy if policy is not None else ("adaptive" if capacity is not None else "fixed")
    if policy == "fixed":
        if capacity is not None:
            raise ValueError("capacity is for the adaptive policy; the fixed one has "
                             "num_classes x slots_per_class slots")
        num_classes = positive_int(num_classes, "num_classes")
        slots_per_class = positive_int(slots_per_class, "slots_per_class")
        capacity = num_classes * slots_per_class
    elif policy == "adaptive":
        if slots_per_class is not None:
            raise ValueError("slots_per_class is for the fixed policy; the adaptive one shares "
                             "capacity slots among the classes seen")
        if capacity is None:
            raise ValueError("the adaptive policy needs capacity (slots per rank)")
        capacity = positive_int(capacity, "capacity")
        num_classes = None if num_classes is None else positive_int(num_classes, "num_classes")
    else:
        raise ValueError(f"policy must be 'adaptive' or 'fixed', got {policy!r}")
    return dict(policy=policy, capacity=capacity, num_classes=num_classes,
                slots_per_class=slots_per_class, sample_shape=normalize_shape(sample_shape),
                dtype=normalize_dtype(dtype).name, num_extras=positive_int(num_extras, "num_extras", minimum=0))


def check_seed(seed) -> int:
    try:
        seed = positive_int(seed, "seed", minimum=0, bound="2**64")
        if seed >= 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    except ValueError as exc:
        raise ValueError(f"invalid Buffer arguments: {exc}") from None
    return seed


def agree(comm, config: dict | None, error: Exception | None) -> None:
    """Collective, even when this rank's arguments were bad, so no rank is left waiting: every
    rank raises if any rank's arguments are invalid or the ranks' descriptions differ."""
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
            raise ValueError(f"{key} differs across ranks ({per_rank}); every rank must pass the same shapes")


def positive_int(value, name, minimum=1, bound="inf"):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be in [{minimum}, {bound}), got {value}")
    return int(value)


def normalize_dtype(dtype) -> np.dtype:
    """'uint8' | 'float32' | 'float16' or the numpy equivalents (native byte order) -> np.dtype."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in DTYPES or not dt.isnative:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)} (native byte order), got {dtype!r}")
    return dt


def normalize_shape(sample_shape) -> tuple:
    shape = (sample_shape,) if isinstance(sample_shape, numbers.Integral) else tuple(sample_shape or ())
    if not shape or any(isinstance(d, bool) or not isinstance(d, numbers.Integral) for d in shape):
        raise ValueError(f"sample_shape must be a non-empty tuple of ints, got {sample_shape!r}")
    if any(d < 1 for d in shape):
        raise ValueError(f"sample_shape entries must be in [1, inf), got {tuple(int(d) for d in shape)}")
    return tuple(int(d) for d in shape)

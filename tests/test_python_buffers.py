"""The plain-Python buffers (``buffers``): semantics, statistics, state, errors.

One process here; the multi-rank checks run in tests/mpi_jobs/python_buffers.py under
``mpirun -np 2`` and ``-np 4``.
"""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).parent / "mpi_jobs")]
from buffer_patterns import check, make_samples  # noqa: E402
from buffers import KINDS, LabelError, LocalBuffer, PythonGlobalBuffer, make_buffer, \
    native_available  # noqa: E402
from python_buffers import inclusion_p_value  # noqa: E402

JOB = Path(__file__).parent / "mpi_jobs" / "python_buffers.py"
CLASSES = [PythonGlobalBuffer, LocalBuffer]
ids = pytest.mark.parametrize("cls", CLASSES, ids=["python", "local"])


def outputs(buf, r):
    return (np.zeros((r, *buf.sample_shape), buf.dtype), np.full(r, -1, np.int64),
            np.zeros((r, buf.num_extras), np.float32) if buf.num_extras else None)


def filled_buffer(cls, count=40, num_extras=0, dtype="uint8", shape=(2, 3), seed=0, K=3, N=4):
    buf = cls(K, N, shape, dtype=dtype, num_extras=num_extras, seed=seed)
    labels = np.random.default_rng(123).integers(0, K, size=count)
    x, y, e, _ = make_samples(0, labels, 0, shape, dtype, num_extras)
    buf.add(x, y, e)
    return buf


# ------------------------------------------------------------------ factory

def test_factory_kinds():
    assert isinstance(make_buffer("python", num_classes=2, slots_per_class=2, sample_shape=(3,)),
                      PythonGlobalBuffer)
    assert isinstance(make_buffer("local", num_classes=2, slots_per_class=2, sample_shape=3),
                      LocalBuffer)
    with pytest.raises(ValueError, match="unknown buffer kind 'nil'.*native, python, local"):
        make_buffer("nil", num_classes=2, slots_per_class=2, sample_shape=(3,))
    assert KINDS == ("native", "python", "local")


def test_factory_native_missing_says_how_to_build(monkeypatch):
    monkeypatch.setitem(sys.modules, "cpp_loader", None)  # as if the extension were not installed
    assert not native_available()
    with pytest.raises(ImportError, match=r"pip install \./cpp_loader"):
        make_buffer("native", num_classes=2, slots_per_class=2, sample_shape=(3,))


def test_same_surface_as_native():
    """The factory's native kind is cpp_loader.Buffer; the Python ones offer what it offers."""
    import cpp_loader

    args = dict(num_classes=2, slots_per_class=3, sample_shape=(4,), num_extras=1)
    native = make_buffer("native", **args)
    assert isinstance(native, cpp_loader.Buffer)
    x, y, e, _ = make_samples(0, [0, 1, 1], 0, (4,), "uint8", 1)
    for kind in ("python", "local"):
        buf = make_buffer(kind, **args)
        for b in (native, buf) if kind == "python" else (buf,):
            b.add(x, y, e)
            ox, oy, oe = outputs(b, 2)
            assert b.sample(2, ox, oy, oe) == 2
        public = {m for m in dir(native) if not m.startswith("_")}
        assert public <= set(dir(buf)), public - set(dir(buf))
        assert set(buf.stats()) == set(native.stats())
        for name in ("rank", "world_size", "num_classes", "slots_per_class", "sample_shape",
                     "dtype", "num_extras", "closed"):
            assert getattr(buf, name) == getattr(native, name), name
        buf.close()
    native.close()


# ------------------------------------------------------------------ representatives

@ids
@pytest.mark.parametrize("dtype", ["uint8", "float32", np.float16])
def test_representatives_are_inserted_samples(cls, dtype):
    buf = filled_buffer(cls, count=50, num_extras=3, dtype=dtype)
    ox, oy, oe = outputs(buf, 20)
    for r in (1, 5, 12, 20):
        n = buf.sample(r, ox, oy, oe)
        assert n == min(r, 12)
        who = [check(ox[i], oy[i], oe[i], 3) for i in range(n)]
        assert len(set(who)) == n
    st = buf.stats()
    assert st["seen_per_class"] == np.bincount(
        np.random.default_rng(123).integers(0, 3, size=50), minlength=3).tolist()
    assert st["filled_per_class"] == [4, 4, 4] and st["filled"] == 12 and st["draws"] == 4
    assert st["bytes_read_remote"] == 0 and st["bytes_read_local"] > 0
    assert buf.dtype == np.dtype(dtype) and buf.sample_shape == (2, 3)
    assert (buf.rank, buf.world_size, buf.num_classes, buf.slots_per_class) == (0, 1, 3, 4)


@ids
def test_partially_filled_and_empty(cls):
    buf = cls(3, 4, (6,))
    ox, oy, _ = outputs(buf, 8)
    assert buf.sample(8, ox, oy) == 0
    x, y, _, _ = make_samples(0, [2, 2, 0], 0, (6,), "uint8")
    buf.add(x, y)
    assert buf.sample(8, ox, oy) == 3
    assert sorted(check(ox[i], oy[i]) for i in range(3)) == [(0, 0, 2), (0, 2, 0), (0, 2, 1)]
    assert (oy[3:] == -1).all()


@ids
def test_torch_cpu_tensors_in_and_out(cls):
    torch = pytest.importorskip("torch")
    buf = cls(2, 3, (4,), dtype="float16", num_extras=2)
    x, y, e, _ = make_samples(0, [0, 1, 1, 0, 1], 0, (4,), "float16", 2)
    buf.add(torch.from_numpy(x), torch.from_numpy(y).int(), torch.from_numpy(e))
    ox, oy = torch.zeros(4, 4, dtype=torch.float16), torch.zeros(4, dtype=torch.int64)
    oe = torch.zeros(4, 2, requires_grad=False)
    n = buf.sample(4, ox, oy, oe)
    for i in range(n):
        check(ox[i].numpy(), int(oy[i]), oe[i].numpy(), 2)
    with pytest.raises(ValueError, match="not C-contiguous"):
        buf.add(torch.zeros(4, 5, dtype=torch.float16).t(), torch.zeros(5, dtype=torch.int64),
                torch.zeros(5, 2))


# ------------------------------------------------------------------ statistics

def test_reservoir_holds_each_sample_with_probability_n_over_m():
    """Each of the first M samples of a class is held with probability N/M (chi-square),
    whatever the batching (batches of 7 with two classes mixed: slots hit twice per batch)."""
    K, N, M, trials = 2, 5, 40, 1500
    labels = np.arange(2 * M) % K  # M samples per class
    x, y, _, ids = make_samples(0, labels, 0, (6,), "uint8")
    held = np.zeros((K, 2 * M), np.int64)
    for t in range(trials):
        buf = LocalBuffer(K, N, (6,), seed=t)
        for first in range(0, 2 * M, 7):
            buf.add(x[first:first + 7], y[first:first + 7])
        samples = buf.state()["samples"]
        for row in samples:
            _, label, sample_id = check(row, row[1])
            held[label, sample_id] += 1
        buf.close()
    for c in range(K):
        counts = held[c, labels == c]
        assert counts.sum() == trials * N
        p = inclusion_p_value(counts, N / M)
        assert p > 1e-3, f"class {c}: held counts {counts} not uniform (p={p:.2e})"


def test_batching_does_not_change_the_buffer():
    labels = np.random.default_rng(1).integers(0, 3, size=200)
    x, y, e, _ = make_samples(0, labels, 0, (5,), "float32", 2)
    one, many = (LocalBuffer(3, 4, (5,), "float32", 2, seed=9) for _ in range(2))
    one.add(x, y, e)
    for i in range(200):
        many.add(x[i:i + 1], y[i:i + 1], e[i:i + 1])
    a, b = one.state(), many.state()
    assert np.array_equal(a["samples"], b["samples"]) and np.array_equal(a["extras"], b["extras"])
    assert np.array_equal(a["seen"], b["seen"])


@ids
def test_draws_uniform_over_filled_slots(cls):
    """Half-filled classes included; r distinct slots per draw (chi-square)."""
    K, N, r, draws = 4, 8, 10, 600
    labels = np.repeat(np.arange(K), [8, 4, 0, 6])
    buf = cls(K, N, (6,), seed=3)
    x, y, _, _ = make_samples(0, labels, 0, (6,), "uint8")
    buf.add(x, y)
    hits = np.zeros(len(labels), np.int64)
    ox, oy, _ = outputs(buf, r)
    for _ in range(draws):
        n = buf.sample(r, ox, oy)
        picked = [check(ox[i], oy[i])[2] for i in range(n)]
        assert len(set(picked)) == n == r
        hits[picked] += 1
    assert inclusion_p_value(hits, r / len(labels)) > 1e-3, hits


# ------------------------------------------------------------------ determinism and state

def draws(buf, r=5, times=4):
    ox, oy, oe = outputs(buf, r)
    out = []
    for _ in range(times):
        n = buf.sample(r, ox, oy, oe)
        out.append(np.concatenate([ox[:n].reshape(n, -1).astype(np.float64), oy[:n, None],
                                   *([oe[:n]] if oe is not None else [])], axis=1))
    return np.stack(out)


@ids
def test_same_seed_same_draws_and_state_round_trip(cls):
    a, b = filled_buffer(cls, num_extras=2, seed=4), filled_buffer(cls, num_extras=2, seed=4)
    assert np.array_equal(draws(a), draws(b))
    assert not np.array_equal(draws(a), draws(filled_buffer(cls, num_extras=2, seed=5)))
    saved = a.state()
    expected = draws(a)
    c = filled_buffer(cls, count=3, num_extras=2, seed=77)
    c.load_state(saved)
    assert np.array_equal(draws(c), expected)
    assert c.stats()["seen_per_class"] == a.stats()["seen_per_class"]
    import pickle
    d = cls(3, 4, (2, 3), num_extras=2)  # empty
    d.load_state(pickle.loads(pickle.dumps(saved)))
    assert np.array_equal(draws(d), expected)


def test_load_state_refuses_other_kind_and_shapes():
    state = filled_buffer(LocalBuffer).state()
    with pytest.raises(ValueError, match="kind 'buffers.LocalBuffer/1'.*PythonGlobalBuffer"):
        filled_buffer(PythonGlobalBuffer).load_state(state)
    with pytest.raises(ValueError, match="sample_shape"):
        filled_buffer(LocalBuffer, shape=(3, 2)).load_state(state)
    with pytest.raises(ValueError, match="slots_per_class"):
        filled_buffer(LocalBuffer, N=5).load_state(state)
    with pytest.raises(ValueError, match="dtype"):
        filled_buffer(LocalBuffer, dtype="float32").load_state(state)
    with pytest.raises(ValueError, match="num_extras"):
        filled_buffer(LocalBuffer, num_extras=1).load_state(state)
    with pytest.raises(ValueError, match="kind"):
        filled_buffer(LocalBuffer).load_state({"samples": 1})


# ------------------------------------------------------------------ lifetime

@ids
def test_start_wait_close(cls):
    buf = filled_buffer(cls)
    ox, oy, _ = outputs(buf, 6)
    buf.start(6, ox, oy)
    with pytest.raises(RuntimeError, match="start\\(\\) called twice without wait"):
        buf.start(6, ox, oy)
    with pytest.raises(RuntimeError, match="pending"):
        buf.sample(6, ox, oy)
    assert buf.wait() == 6
    with pytest.raises(RuntimeError, match="wait\\(\\) without a pending start"):
        buf.wait()
    buf.close()
    buf.close()
    assert buf.closed
    for call in (lambda: buf.add(ox, oy), lambda: buf.sample(6, ox, oy), buf.stats, buf.state,
                 lambda: buf.start(6, ox, oy), buf.wait):
        with pytest.raises(RuntimeError, match="buffer is closed"):
            call()
    with cls(2, 2, (3,)) as other:
        assert not other.closed
    assert other.closed


# ------------------------------------------------------------------ bad input

class FakeCudaTensor:
    def __dlpack_device__(self):
        return (2, 0)

    def __dlpack__(self, **kwargs):
        raise AssertionError("must not be read")


def bad_adds():
    u8 = lambda *s: np.zeros(s, np.uint8)  # noqa: E731
    y4 = np.zeros(4, np.int64)
    e4 = np.zeros((4, 2), np.float32)
    return [
        ((u8(4, 2, 4), y4, e4), ValueError, r"x has shape \(4, 2, 4\), expected \(n, 2, 3\)"),
        ((np.zeros((4, 2, 3), np.float32), y4, e4), ValueError,
         "x has dtype float32, expected uint8"),
        ((u8(3, 4, 2).transpose(1, 2, 0)[:, :2, :], y4, e4), ValueError, "not C-contiguous"),
        ((u8(4, 2, 3), np.array([0, 1, 3, 0]), e4), LabelError,
         r"label 3 \(sample 2\) is outside \[0, 3\)"),
        ((u8(4, 2, 3), np.array([0, -1, 2, 0]), e4), IndexError,
         r"label -1 \(sample 1\) is outside"),
        ((u8(4, 2, 3), y4.astype(np.float32), e4), ValueError, "y has dtype float32"),
        ((u8(4, 2, 3), np.zeros(3, np.int64), e4), ValueError, "y has 3 labels but x has 4"),
        ((u8(4, 2, 3), y4, None), ValueError, "extras missing"),
        ((u8(4, 2, 3), y4, np.zeros((4, 3), np.float32)), ValueError, "extras has shape"),
        ((u8(4, 2, 3), y4, np.zeros((4, 2), np.float64)), ValueError, "extras has dtype float64"),
        ((u8(4, 2, 3), y4, np.zeros((3, 2), np.float32)), ValueError, "extras has 3 rows"),
        ((FakeCudaTensor(), y4, e4), ValueError, "x is a CUDA tensor.*CPU"),
        (([[1, 2, 3]], y4, e4), TypeError, "numpy array or a CPU tensor"),
    ]


@ids
@pytest.mark.parametrize("case", range(len(bad_adds())))
def test_bad_add(cls, case):
    args, error, message = bad_adds()[case]
    buf = cls(3, 4, (2, 3), num_extras=2)
    with pytest.raises(error, match=message):
        buf.add(*args)
    assert buf.stats()["seen_per_class"] == [0, 0, 0]


@ids
def test_unexpected_extras(cls):
    buf = cls(3, 4, (2, 3))
    with pytest.raises(ValueError, match="extras given but this buffer was built with num_extras"):
        buf.add(np.zeros((1, 2, 3), np.uint8), np.zeros(1, np.int64), np.zeros((1, 1), np.float32))
    ox, oy, _ = outputs(buf, 2)
    with pytest.raises(ValueError, match="out_extras given"):
        buf.sample(2, ox, oy, np.zeros((2, 1), np.float32))


@ids
def test_bad_sample(cls):
    buf = filled_buffer(cls, num_extras=2)
    ox, oy, oe = outputs(buf, 8)
    cases = [
        ((0, ox, oy, oe), "r must be a positive"),
        ((-2, ox, oy, oe), "r must be a positive"),
        ((2.5, ox, oy, oe), "r must be a positive"),
        ((9, ox, oy, oe), "out_x has room for 8 rows, fewer than r=9"),
        ((4, ox.astype(np.float32), oy, oe), "out_x has dtype float32"),
        ((4, np.zeros((8, 3, 2), np.uint8), oy, oe), "out_x has shape"),
        ((4, ox, oy[:3], oe), "out_y has room for 3 rows"),
        ((4, ox, oy.astype(np.float64), oe), "out_y has dtype float64"),
        ((4, ox, oy.astype(np.int32), oe), "out_y has dtype int32, expected int64"),
        ((4, ox, oy, None), "out_extras missing"),
        ((4, ox, oy, oe[:2]), "out_extras has room for 2 rows"),
        ((4, ox, oy, oe.astype(np.float16)), "out_extras has dtype float16"),
        ((4, np.zeros((8, 3, 2), np.uint8).transpose(0, 2, 1), oy, oe),
         "out_x is not C-contiguous"),
        ((4, FakeCudaTensor(), oy, oe), "out_x is a CUDA tensor"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            buf.sample(*args)
        with pytest.raises(ValueError, match=message):
            buf.start(*args)
    readonly = ox.copy()
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="out_x is read-only"):
        buf.sample(4, readonly, oy, oe)
    assert buf.stats()["draws"] == 0
    assert buf.sample(4, ox, oy, oe) == 4  # nothing was left pending by the failures


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_classes=0), "num_classes must be an integer >= 1, got 0"),
    (dict(slots_per_class=2.0), "slots_per_class must be an integer"),
    (dict(sample_shape=(3, 0)), "sample_shape must be a non-empty tuple"),
    (dict(sample_shape=()), "sample_shape must be a non-empty tuple"),
    (dict(dtype="int16"), "dtype 'int16' is not supported; use one of uint8, float32, float16"),
    (dict(num_extras=-1), "num_extras must be an integer >= 0"),
    (dict(seed=-1), "seed must be an integer >= 0"),
])
def test_bad_construction(kwargs, message):
    args = dict(num_classes=3, slots_per_class=4, sample_shape=(2, 3))
    args.update(kwargs)
    for cls in CLASSES:
        with pytest.raises(ValueError, match=message):
            cls(**args)


# ------------------------------------------------------------------ several ranks

@pytest.mark.timeout(60)
@pytest.mark.parametrize("ranks", [2, 4])
def test_mpi_job(mpirun, ranks):
    """Byte-exact representatives (global: from other ranks too; local: own only), uniform
    global draws over unequally filled ranks, determinism, state, shape mismatch."""
    proc = mpirun(ranks, [sys.executable, str(JOB)], timeout=50)
    assert "all ok" in proc.stdout, proc.stdout + proc.stderr

"""The native buffer (cpp_loader): representatives, statistics, determinism, state, errors.

One process here (an mpi4py singleton); the multi-rank checks run in
tests/mpi_jobs/native_checks.py under ``mpirun -np 2`` and ``-np 4``.
"""
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMPI_MCA_osc", "^ucx")  # quiet Open MPI if this process starts MPI
os.environ.setdefault("OMPI_MCA_pml", "^ucx")
JOBS = Path(__file__).parent / "mpi_jobs"
sys.path[:0] = [str(JOBS)]
from native_common import check, make_samples, outputs, uniform_p_value  # noqa: E402
from buffer_patterns import identify  # noqa: E402

import cpp_loader  # noqa: E402  (must be built: a missing extension fails these tests, never skips them)

assert hasattr(cpp_loader, "Buffer"), "cpp_loader is not installed (only its source folder): pip install ./cpp_loader"
Buffer = cpp_loader.Buffer
pytestmark = pytest.mark.timeout(300)


def filled_buffer(count=40, dtype="uint8", num_extras=0, shape=(2, 3), seed=0, K=3, N=4):
    buf = Buffer(K, N, shape, dtype, num_extras=num_extras, seed=seed)
    labels = np.random.default_rng(123).integers(0, K, size=count)
    x, y, e, _ = make_samples(0, labels, 0, shape, dtype, num_extras)
    buf.add(x, y, e)
    return buf


def drawn(buf, r, asynchronous=False):
    out = outputs(buf, r)
    if asynchronous:
        buf.start(r, *out)
        n = buf.wait()
    else:
        n = buf.sample(r, *out)
    return n, out


# ------------------------------------------------------------------ representatives

@pytest.mark.parametrize("dtype", ["uint8", "float32", "float16"])
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_representatives_are_inserted_samples(dtype, asynchronous):
    with filled_buffer(dtype=dtype, num_extras=3) as buf:
        held = {check(*row, 3) for row in zip(*(buf.state()[k] for k in ("samples", "labels", "extras")))}
        assert buf.stats()["filled"] == 12 and buf.stats()["seen_per_class"] == [15, 10, 15]
        for _ in range(5):
            n, (ox, oy, oe) = drawn(buf, 7, asynchronous)
            assert n == 7
            rows = [check(ox[k], oy[k], oe[k], 3) for k in range(n)]
            assert len(set(rows)) == n and set(rows) <= held
        n, (ox, oy, oe) = drawn(buf, 50, asynchronous)  # more than held: all of them, once
        assert n == 12 and {check(ox[k], oy[k], oe[k], 3) for k in range(n)} == held
        assert (oy[n:] == -1).all() and (ox[n:] == 255).all()


def test_empty_buffer_draws_nothing():
    with Buffer(2, 3, (4,)) as buf:
        assert drawn(buf, 5)[0] == 0 and drawn(buf, 5, asynchronous=True)[0] == 0
        assert buf.stats()["global_filled"] == 0


def test_cpu_tensors_in_and_out_without_copies():
    torch = pytest.importorskip("torch")
    with Buffer(2, 4, (3, 5), "float32", num_extras=2) as buf:
        x, y, e, _ = make_samples(0, [0, 1, 1, 0, 1], 0, (3, 5), "float32", 2)
        buf.add(torch.from_numpy(x), torch.from_numpy(y).to(torch.int32), torch.from_numpy(e))
        ox, oy, oe = torch.zeros(6, 3, 5), torch.full((6,), -1, dtype=torch.int64), torch.zeros(6, 2)
        n = buf.sample(6, ox, oy, oe)
        assert n == 5 and (oy[n:] == -1).all()
        for k in range(n):  # written in place: the tensors shared their memory
            check(ox[k].numpy(), oy[k].item(), oe[k].numpy(), 2)


# ------------------------------------------------------------------ statistics

def test_reservoir_holds_each_sample_with_probability_n_over_m():
    """After M samples of a class, each is held with probability N/M (many buffers and seeds);
    a policy biased to recent samples fails the same test."""
    K, N, M, seeds = 25, 4, 16, 40
    labels = np.tile(np.arange(K), M)  # interleaved classes: the m-th of class c has id m*K + c
    x, y, _, _ = make_samples(0, labels, 0, (6,), "uint8")
    hits = np.zeros(M, np.int64)
    for seed in range(seeds):
        with Buffer(K, N, (6,), seed=seed) as buf:
            for first in range(0, len(y), 70):
                buf.add(x[first:first + 70], y[first:first + 70])
            for sample in buf.state()["samples"]:
                hits[identify(sample)[2] // K] += 1
    assert hits.sum() == seeds * K * N
    assert uniform_p_value(hits, N / M) > 1e-3, hits

    rng, biased = np.random.default_rng(0), np.zeros(M, np.int64)
    for _ in range(seeds * K):  # "replace a random slot with probability 1/2": recency bias
        slots = list(range(N))
        for m in range(N, M):
            if rng.random() < 0.5:
                slots[rng.integers(N)] = m
        biased[slots] += 1
    assert uniform_p_value(biased, N / M) < 1e-6, biased


# ------------------------------------------------------------------ determinism and state

def test_same_seed_same_draws_sync_and_async():
    a, b, c = filled_buffer(seed=5), filled_buffer(seed=5), filled_buffer(seed=6)
    differ = 0
    for i in range(8):
        na, (xa, ya, _) = drawn(a, 5, asynchronous=bool(i % 2))
        nb, (xb, yb, _) = drawn(b, 5, asynchronous=not i % 2)  # sync and async draw alike
        nc, (xc, yc, _) = drawn(c, 5)
        assert na == nb and np.array_equal(xa, xb) and np.array_equal(ya, yb)
        differ += not np.array_equal(xa, xc)
    assert differ
    for buf in (a, b, c):
        buf.close()


def assert_same_state(s, t):
    assert s.keys() == t.keys()
    for key in s:
        if key != "seed":
            assert (np.array_equal(s[key], t[key]) if isinstance(s[key], np.ndarray) else s[key] == t[key]), key


def test_state_round_trip_restores_contents_counters_and_generators():
    a = filled_buffer(num_extras=2, seed=3)
    drawn(a, 4)
    state = pickle.loads(pickle.dumps(a.state()))
    assert state["kind"] == cpp_loader.STATE_KIND == "cpp_loader.Buffer/1"
    assert isinstance(state["insertion_generator"], str) and isinstance(state["draw_generator"], str)
    with Buffer(3, 4, (2, 3), num_extras=2, seed=77) as b:
        b.load_state(state)
        assert_same_state(a.state(), b.state())
        assert a.stats()["seen_per_class"] == b.stats()["seen_per_class"]
        for i in range(3):
            (na, oa), (nb, ob) = drawn(a, 6, i % 2), drawn(b, 6, i % 2)
            assert na == nb and all(np.array_equal(p, q) for p, q in zip(oa, ob))
        x, y, e, _ = make_samples(0, np.arange(30) % 3, 100, (2, 3), "uint8", 2)
        a.add(x, y, e)
        b.add(x, y, e)
        assert_same_state(a.state(), b.state())
    a.close()


@pytest.mark.parametrize("change, message", [
    (dict(kind="buffers.PythonGlobalBuffer/1"), "state is of kind 'buffers.PythonGlobalBuffer/1', expected"),
    (dict(sample_shape=(3, 2)), r"sample_shape: state has \(3, 2\), buffer has \(2, 3\)"),
    (dict(num_classes=4, dtype="float32"), "num_classes: state has 4, buffer has 3; dtype: state has 'float32'"),
    (dict(draw_generator="12 oops"), "draw generator state is malformed"),
    (dict(insertion_generator="x"), "insertion generator state is malformed"),
    (dict(filled_per_class=np.array([4, 4, 3])), "class 2 has seen=15 and filled=3"),
    (dict(labels=np.zeros(5, np.int64)), r"labels has shape \(5,\), expected 12 rows"),
])
def test_load_state_refuses_what_does_not_fit(change, message):
    with filled_buffer(seed=1) as buf:
        state = buf.state()
        before = buf.state()
        state.update(change)
        with pytest.raises(ValueError, match=message):
            buf.load_state(state)
        assert_same_state(buf.state(), before)  # nothing half-loaded


def test_load_state_names_missing_entries():
    with filled_buffer() as buf:
        state = buf.state()
        del state["samples"], state["num_extras"]
        with pytest.raises(ValueError, match="state lacks num_extras, samples"):
            buf.load_state(state)
        with pytest.raises(TypeError, match="state must be a dict"):
            buf.load_state([1])


# ------------------------------------------------------------------ errors

class FakeCudaTensor:
    device = "cuda:0"

    def __dlpack_device__(self):
        return (2, 0)

    def __dlpack__(self, **kwargs):
        raise AssertionError("must not be read")


def bad_calls():
    x, y, e, _ = make_samples(0, [0, 1, 2, 1], 0, (2, 3), "uint8", 2)
    ox, oy, oe = np.zeros((5, 2, 3), np.uint8), np.zeros(5, np.int64), np.zeros((5, 2), np.float32)
    readonly = ox.copy()
    readonly.flags.writeable = False
    return [
        ("x dtype", lambda b: b.add(x.astype(np.float32), y, e), ValueError, "x has dtype float32, expected uint8"),
        ("x shape", lambda b: b.add(x.reshape(4, 3, 2), y, e), ValueError,
         r"x has shape \(4, 3, 2\), expected \(n, 2, 3\)"),
        ("x strided", lambda b: b.add(x[:, :, ::-1], y, e), ValueError, "x must be C-contiguous"),
        ("x list", lambda b: b.add(x.tolist(), y, e), TypeError, "x must be a numpy array or a CPU tensor, got list"),
        ("x cuda", lambda b: b.add(FakeCudaTensor(), y, e), ValueError, "x is on cuda:0: it must be on the CPU"),
        ("label high", lambda b: b.add(x, np.array([0, 3, 1, 1]), e), cpp_loader.LabelError,
         r"label 3 \(sample 1\) is outside \[0, 3\)"),
        ("label negative", lambda b: b.add(x, np.array([0, 1, 1, -1]), e), ValueError,
         r"label -1 \(sample 3\) is outside \[0, 3\)"),
        ("y length", lambda b: b.add(x, y[:3], e), ValueError, "y has 3 labels but x has 4 samples"),
        ("y dtype", lambda b: b.add(x, y.astype(np.float64), e), ValueError,
         "y has dtype float64, expected int64 .or int32."),
        ("extras missing", lambda b: b.add(x, y), ValueError, r"extras is required \(num_extras=2\)"),
        ("extras width", lambda b: b.add(x, y, np.zeros((4, 3), np.float32)), ValueError,
         r"extras has shape \(4, 3\), expected \(n, 2\)"),
        ("extras rows", lambda b: b.add(x, y, e[:2]), ValueError, "extras has 2 rows but x has 4 samples"),
        ("extras dtype", lambda b: b.add(x, y, e.astype(np.float64)), ValueError,
         "extras has dtype float64, expected float32"),
        ("r zero", lambda b: b.sample(0, ox, oy, oe), ValueError, "r must be positive, got 0"),
        ("r negative async", lambda b: b.start(-2, ox, oy, oe), ValueError, "r must be positive, got -2"),
        ("out too small", lambda b: b.sample(6, ox, oy, oe), ValueError, "output arrays hold 5 rows, need at least r=6"),
        ("out_x dtype", lambda b: b.sample(2, ox.astype(np.float32), oy, oe), ValueError,
         "out_x has dtype float32, expected uint8"),
        ("out_y dtype", lambda b: b.start(2, ox, oy.astype(np.int32), oe), ValueError,
         "out_y has dtype int32, expected int64"),
        ("out_x read-only", lambda b: b.sample(2, readonly, oy, oe), ValueError, "out_x is read-only"),
        ("out_x strided", lambda b: b.sample(2, ox[::2], oy, oe), ValueError, "out_x must be C-contiguous"),
        ("out_extras missing", lambda b: b.sample(2, ox, oy), ValueError, r"out_extras is required \(num_extras=2\)"),
        ("out_extras shape", lambda b: b.sample(2, ox, oy, oe[:, :1].copy()), ValueError,
         r"out_extras has shape \(5, 1\), expected \(n, 2\)"),
        ("out cuda", lambda b: b.start(2, ox, FakeCudaTensor(), oe), ValueError, "out_y is on cuda:0"),
    ]


@pytest.mark.parametrize("name, call, error, message", bad_calls(), ids=[c[0] for c in bad_calls()])
def test_bad_input_raises(name, call, error, message):
    with filled_buffer(num_extras=2) as buf:
        before = buf.stats()
        with pytest.raises(error, match=message):
            call(buf)
        assert buf.stats() == before  # nothing was stored or drawn
        assert drawn(buf, 3, asynchronous=True)[0] == 3  # and no draw is left in flight


def test_label_error_is_index_and_value_error():
    assert issubclass(cpp_loader.LabelError, IndexError) and issubclass(cpp_loader.LabelError, ValueError)


def test_unexpected_extras_raise():
    with filled_buffer() as buf:
        x, y, e, _ = make_samples(0, [0], 0, (2, 3), "uint8", 2)
        with pytest.raises(ValueError, match="extras given but the buffer has num_extras=0"):
            buf.add(x, y, e)
        with pytest.raises(ValueError, match="out_extras given but the buffer has num_extras=0"):
            buf.sample(1, *outputs(buf, 1)[:2], np.zeros((1, 1), np.float32))


@pytest.mark.parametrize("kwargs, message", [
    (dict(dtype="int16"), "dtype must be one of uint8, float32, float16"),
    (dict(dtype=">f4"), "dtype must be one of"),
    (dict(num_classes=0), r"num_classes must be in \[1, inf\), got 0"),
    (dict(slots_per_class=2.5), "slots_per_class must be an int, got 2.5"),
    (dict(sample_shape=(3, 0)), "sample_shape entries must be in"),
    (dict(num_extras=-1), "num_extras must be in"),
    (dict(seed=-1), "seed must be in"),
])
def test_bad_construction_raises(kwargs, message):
    args = dict(num_classes=3, slots_per_class=2, sample_shape=(2, 3))
    args.update(kwargs)
    with pytest.raises(ValueError, match="invalid Buffer arguments: .*" + message):
        Buffer(**args)


def test_numpy_dtypes_and_int_shape_accepted():
    with Buffer(2, 2, 5, np.float16) as buf:
        assert buf.sample_shape == (5,) and buf.dtype == np.dtype("float16")
    with pytest.raises(TypeError, match="comm must be an mpi4py intracommunicator"):
        Buffer(2, 2, 5, comm="world")


# ------------------------------------------------------------------ lifetime

def test_draw_state_errors_and_close_in_flight():
    buf = filled_buffer()
    out = outputs(buf, 4)
    with pytest.raises(RuntimeError, match="no draw in flight"):
        buf.wait()
    buf.start(4, *out)
    with pytest.raises(RuntimeError, match="a draw is in flight: call wait"):
        buf.start(4, *out)
    with pytest.raises(RuntimeError, match="a draw is in flight"):
        buf.sample(4, *out)
    with pytest.raises(RuntimeError, match="a draw is in flight"):
        buf.state()
    buf.close()  # waits for the draw
    assert buf.closed and "closed" in repr(buf)
    for call in (buf.wait, buf.stats, buf.state, lambda: buf.sample(4, *out), lambda: buf.add(*out[:2])):
        with pytest.raises(RuntimeError, match="^buffer is closed$"):
            call()
    buf.close()
    assert buf.num_classes == 3 and buf.world_size == 1  # the description outlives the window


def test_context_manager_closes_and_stats_fields():
    with filled_buffer(num_extras=1) as buf:
        drawn(buf, 5)
        stats = buf.stats()
        assert set(stats) == {"classes", "seen_per_class", "filled_per_class", "filled", "capacity", "filled_per_rank",
                              "global_filled", "last_draw_seconds", "bytes_read_remote", "bytes_read_local", "draws"}
        assert stats["classes"] == [0, 1, 2] and stats["capacity"] == 12
        assert stats["filled_per_rank"] == [12] and stats["global_filled"] == 12 and stats["draws"] == 1
        assert stats["bytes_read_local"] == 5 * (6 + 8 + 4) and stats["bytes_read_remote"] == 0
        assert stats["last_draw_seconds"] > 0
    assert buf.closed


# ------------------------------------------------------------------ multi-rank (mpirun)

QUICK = ["representatives", "determinism", "state_round_trip", "inconsistent_construction", "close_in_flight"]


@pytest.mark.parametrize("np_", [2, 4])
@pytest.mark.parametrize("checks", [QUICK, ["uniform", "uniform_adaptive"], ["no_torn_reads"],
                                    ["no_torn_reads_adaptive"]], ids=["semantics", "uniform", "torn", "torn_adaptive"])
def test_multi_rank(mpirun, np_, checks):
    proc = mpirun(np_, [sys.executable, str(JOBS / "native_checks.py"), *checks], timeout=240)
    for name in checks:
        assert f"ok {name}" in proc.stdout, proc.stdout


def test_below_thread_multiple_sync_works_async_refused(mpirun):
    proc = mpirun(2, [sys.executable, str(JOBS / "native_thread_level.py")], timeout=120)
    assert "ok serialized" in proc.stdout


def test_open_buffers_are_closed_at_exit(mpirun):
    proc = mpirun(2, [sys.executable, str(JOBS / "native_exit_open.py")], timeout=120)
    assert proc.stdout.count("buffers closed at exit") == 2, proc.stdout + proc.stderr

"""What only the native buffer (cpp_loader.Buffer) does. The contract that every buffer kind
shares (representatives, uniform draws, the reservoir's N/M inclusion, add/read/write_extras,
out_where, determinism and state, bad input, closing) is tested once for all kinds in
tests/test_buffer_contract.py.

Here, in one process (an mpi4py singleton): asynchronous draws (start()/wait() draw what
sample() draws; errors and close() while a draw is in flight), the native state's format and
validation, add()'s shared-slot rule, argument checks the contract does not name, and the byte
counts of stats(). The multi-rank checks run in tests/mpi_jobs/native_checks.py under
``mpirun -np 2`` and ``-np 4``, with the thread-level and exit-with-open-buffers jobs.
"""
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

import cpp_loader  # must be built: a missing extension fails these tests, never skips them
from buffer_patterns import check, make_samples, outputs

JOBS = Path(__file__).parent / "mpi_jobs"

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


# ------------------------------------------------------------------ asynchronous draws

@pytest.mark.parametrize("dtype", ["uint8", "float32", "float16"])
def test_async_draws_are_inserted_samples(dtype):
    """start()/wait() (the contract checks sample()): held samples, distinct, all of them once
    when r exceeds what is held, rows past n untouched; an empty buffer draws nothing."""
    with Buffer(2, 3, (4,)) as empty:
        assert drawn(empty, 5, asynchronous=True)[0] == 0 and empty.stats()["global_filled"] == 0
    with filled_buffer(dtype=dtype, num_extras=3) as buf:
        held = {check(*row, 3) for row in zip(*(buf.state()[k] for k in ("samples", "labels", "extras")))}
        for _ in range(5):
            n, (ox, oy, oe) = drawn(buf, 7, asynchronous=True)
            assert n == 7
            rows = [check(ox[k], oy[k], oe[k], 3) for k in range(n)]
            assert len(set(rows)) == n and set(rows) <= held
        n, (ox, oy, oe) = drawn(buf, 50, asynchronous=True)  # more than held: all of them, once
        assert n == 12 and {check(ox[k], oy[k], oe[k], 3) for k in range(n)} == held
        assert (oy[n:] == -1).all() and (ox[n:] == 255).all()


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
    """Beyond the contract's round trip: the native state's kind and generator strings, every
    entry restored exactly, async draws alike, and later adds taking the same slots."""
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
    (dict(num_classes=4, dtype="float32"), "num_classes: state has 4, buffer has 3; dtype: state has 'float32'"),
    (dict(draw_generator="12 oops"), "draw generator state is malformed"),
    (dict(insertion_generator="x"), "insertion generator state is malformed"),
    (dict(filled_per_class=np.array([4, 4, 3])), "class 2 has seen=15 and filled=3"),
    (dict(labels=np.zeros(5, np.int64)), r"labels has shape \(5,\), expected 12 rows"),
])
def test_load_state_refuses_what_does_not_fit(change, message):
    """The contract checks one mismatched field, the kind and missing entries; here every
    mismatch is named, damaged generators and counters are refused, and nothing half-loads."""
    with filled_buffer(seed=1) as buf:
        state = buf.state()
        before = buf.state()
        state.update(change)
        with pytest.raises(ValueError, match=message):
            buf.load_state(state)
        assert_same_state(buf.state(), before)  # nothing half-loaded


# ------------------------------------------------------------------ slots: add's result, read, write_extras

def read_rows(buf, slots):
    slots = np.asarray(slots, np.int64)
    out = outputs(buf, max(len(slots), 1))
    buf.read(slots, *out)
    return out


@pytest.mark.parametrize("policy", ["fixed", "adaptive"])
def test_add_returns_the_slot_of_each_sample(policy):
    """add() returns where each sample went (-1: dropped); read() of those slots gives the rows
    back; in one call, a slot taken twice keeps only the later sample's number. Insertion does
    not depend on batching, so one-by-one adds (same seed) give the per-sample slots."""
    K, N, E, shape = 3, 4, 2, (2, 3)
    make = (lambda: Buffer(K, N, shape, num_extras=E, seed=9)) if policy == "fixed" else \
        (lambda: Buffer(sample_shape=shape, capacity=K * N, num_extras=E, seed=9))
    labels = np.random.default_rng(4).integers(0, K, size=90)
    x, y, e, _ = make_samples(0, labels, 0, shape, "uint8", E)
    with make() as batched, make() as single:
        one_by_one = np.concatenate([single.add(x[i:i + 1], y[i:i + 1], e[i:i + 1]) for i in range(len(y))])
        assert one_by_one.dtype == np.int64 and one_by_one.shape == (90,)
        shared = 0
        for first in range(0, 90, 30):
            part = slice(first, first + 30)
            slots = batched.add(x[part], y[part], e[part])
            assert slots.dtype == np.int64 and slots.shape == (30,)
            expected = one_by_one[part].copy()
            for i in range(30):  # a later sample of the call took the same slot: -1
                if expected[i] >= 0 and (one_by_one[part][i + 1:] == expected[i]).any():
                    expected[i], shared = -1, shared + 1
            assert np.array_equal(slots, expected), (slots, expected)
            kept = np.flatnonzero(slots >= 0)
            assert len(set(slots[kept])) == len(kept)
            ox, oy, oe = read_rows(batched, slots[kept])
            assert np.array_equal(ox[:len(kept)], x[part][kept]) and np.array_equal(oy[:len(kept)], y[part][kept])
            assert np.array_equal(oe[:len(kept)], e[part][kept])
        assert shared, "no call had two samples in one slot: the test lost its point"
        assert (one_by_one[:K * N] >= 0).all() and (one_by_one == -1).any()  # fills, then drops some
        assert_same_state(batched.state(), single.state())
        state = batched.state()  # the last number given for a slot names the sample it holds
        last = {int(s): i for i, s in enumerate(one_by_one) if s >= 0}
        for slot, i in last.items():
            assert np.array_equal(state["samples"][slot], x[i]) and state["labels"][slot] == y[i]


def test_add_slots_of_a_full_fixed_class_and_empty_calls():
    with Buffer(2, 3, (4,), seed=1) as buf:
        x, y, _, _ = make_samples(0, [1] * 3, 0, (4,), "uint8")
        assert buf.add(x, y).tolist() == [3, 4, 5]  # class 1 fills slots 1*N + 0, 1, 2
        x, y, _, _ = make_samples(0, [1] * 40, 3, (4,), "uint8")
        slots = np.concatenate([buf.add(x[i:i + 1], y[i:i + 1]) for i in range(40)])
        assert set(slots.tolist()) == {-1, 3, 4, 5}  # the full class evicts its own slots, or drops
        assert buf.add(x[:0], y[:0]).shape == (0,)
        held = read_rows(buf, [3, 4, 5])
        last = {s: i for i, s in enumerate(slots.tolist()) if s >= 0}
        for k, slot in enumerate([3, 4, 5]):
            check(held[0][k], held[1][k])
            if slot in last:
                assert np.array_equal(held[0][k], x[last[slot]])


def test_read_and_write_extras_check_everything_before_touching_anything():
    """The contract checks the messages for one bad slot; here a bad slot after a good one
    leaves the outputs and the extras untouched, and the other arguments are checked."""
    with filled_buffer(count=5, num_extras=2) as buf:  # K=3, N=4: some slots still empty
        filled = [int(s) for s, label in enumerate(buf.state()["labels"]) if label >= 0]
        empty = next(s for s in range(12) if s not in filled)
        out = outputs(buf, 3)
        before = [a.copy() for a in out]
        cases = [([0, 12], "slots must be in \\[0, 12\\), got 12"), ([-1], "slots must be in \\[0, 12\\), got -1"),
                 ([filled[0], empty], f"slot {empty} is empty")]
        for slots, message in cases:
            with pytest.raises(ValueError, match=f"^{message}$"):
                buf.read(np.array(slots, np.int64), *out)
            with pytest.raises(ValueError, match=f"^{message}$"):
                buf.write_extras(np.array(slots, np.int64), np.zeros((len(slots), 2), np.float32))
        assert all(np.array_equal(a, b) for a, b in zip(out, before))  # nothing read
        state = buf.state()
        with pytest.raises(ValueError, match="slots has dtype float64, expected int64 .or int32."):
            buf.read(np.array(filled[:1], np.float64), *out)
        with pytest.raises(TypeError, match="slots must be a numpy array or a CPU tensor, got list"):
            buf.read(filled[:1], *out)
        with pytest.raises(ValueError, match=r"output arrays hold 3 rows, need at least len\(slots\)=4"):
            buf.read(np.array(filled[:1] * 4), *out)
        with pytest.raises(ValueError, match=r"out_extras is required \(num_extras=2\)"):
            buf.read(np.array(filled[:1]), *out[:2])
        with pytest.raises(ValueError, match="extras has 1 rows but slots has 2 entries"):
            buf.write_extras(np.array(filled[:2]), np.zeros((1, 2), np.float32))
        with pytest.raises(ValueError, match=r"extras has shape \(2, 3\), expected \(n, 2\)"):
            buf.write_extras(np.array(filled[:2]), np.zeros((2, 3), np.float32))
        with pytest.raises(ValueError, match="extras has dtype float64, expected float32"):
            buf.write_extras(np.array(filled[:2]), np.zeros((2, 2)))
        assert_same_state(buf.state(), state)  # nothing written


def test_write_extras_last_wins_and_draws_carry_it():
    """Beyond the contract's rewrite and state: a slot named twice in one call keeps the later
    row, samples and labels are untouched, and (async) draws carry the rewritten extras."""
    with filled_buffer(num_extras=3, seed=2) as buf:
        state = buf.state()
        chosen = np.flatnonzero(state["labels"] >= 0)[::2]
        new = np.arange(len(chosen) * 3, dtype=np.float32).reshape(-1, 3) + 0.5
        buf.write_extras(chosen, new)
        buf.write_extras(np.array([chosen[0], chosen[0]]), np.array([[9, 9, 9], [7, 7, 7]], np.float32))  # last wins
        new[0] = 7
        ox, oy, oe = read_rows(buf, chosen)
        assert np.array_equal(oe[:len(chosen)], new)
        assert np.array_equal(ox[:len(chosen)], state["samples"][chosen])  # samples and labels untouched
        assert np.array_equal(oy[:len(chosen)], state["labels"][chosen])
        n, (dx, dy, de) = drawn(buf, 12, asynchronous=True)
        rows = {bytes(dx[k]): de[k] for k in range(n)}
        for k, slot in enumerate(chosen):
            assert np.array_equal(rows[bytes(state["samples"][slot])], new[k])


def test_async_out_where_and_its_errors():
    """start(..., out_where) (the contract checks sample's and one async draw): distinct slots
    that read() gives back, rows past n untouched when r exceeds what is held; a bad out_where
    is refused by sample() and start() alike, and no draw is left in flight."""
    with filled_buffer(num_extras=2) as buf:
        for r in (5, 12, 20):
            ox, oy, oe = outputs(buf, r)
            where = np.full((r + 1, 2), -7, np.int64)
            buf.start(r, ox, oy, oe, out_where=where)
            n = buf.wait()
            assert n == min(r, 12) and (where[:n, 0] == 0).all() and (where[n:] == -7).all()
            assert len(set(where[:n, 1].tolist())) == n
            rx, ry, re_ = read_rows(buf, where[:n, 1])
            assert np.array_equal(rx[:n], ox[:n]) and np.array_equal(ry[:n], oy[:n]) and np.array_equal(re_[:n], oe[:n])
        ox, oy, oe = outputs(buf, 4)
        with pytest.raises(ValueError, match=r"out_where has shape \(4, 3\), expected \(n, 2\)"):
            buf.sample(4, ox, oy, oe, np.zeros((4, 3), np.int64))
        with pytest.raises(ValueError, match="out_where has dtype int32, expected int64"):
            buf.start(4, ox, oy, oe, np.zeros((4, 2), np.int32))
        with pytest.raises(ValueError, match="output arrays hold 3 rows, need at least r=4"):
            buf.sample(4, ox, oy, oe, np.zeros((3, 2), np.int64))
        assert drawn(buf, 3, asynchronous=True)[0] == 3  # nothing left in flight


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize("kwargs, message", [
    (dict(dtype=">f4"), "dtype must be one of"),
    (dict(seed=2**64), r"seed must be in \[0, 2\*\*64\), got 18446744073709551616"),
    (dict(num_classes=True), "num_classes must be an int, got True"),
    (dict(num_classes=2**70), "num_classes must be a 64-bit integer, got 1180591620717411303424"),
    (dict(sample_shape="ab"), "sample_shape must be a tuple of ints, got 'ab'"),
    (dict(capacity=4, policy="fixed"), "capacity is for the adaptive policy"),
    (dict(num_classes=None), "the fixed policy needs num_classes and slots_per_class"),
])
def test_bad_construction_raises(kwargs, message):
    """The cases test_buffer_contract.py's test_bad_construction_same_message does not list."""
    args = dict(num_classes=3, slots_per_class=2, sample_shape=(2, 3))
    args.update(kwargs)
    with pytest.raises(ValueError, match="invalid Buffer arguments: .*" + message):
        Buffer(**args)


def test_numpy_dtypes_int_shape_comm_and_label_error():
    assert issubclass(cpp_loader.LabelError, IndexError) and issubclass(cpp_loader.LabelError, ValueError)
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
    with pytest.raises(RuntimeError, match="^buffer is closed$"):  # the draw was waited for, not kept
        buf.wait()
    buf.close()
    assert buf.num_classes == 3 and buf.world_size == 1  # the description outlives the window


def test_stats_fields_count_bytes_and_time():
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

QUICK = ["representatives", "determinism", "state_round_trip", "inconsistent_construction", "close_in_flight",
         "slots_and_where"]


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

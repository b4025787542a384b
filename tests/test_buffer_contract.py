"""The buffer contract (buffers.RehearsalBuffer), one process, for every kind: the native
``cpp_loader.Buffer``, ``PythonGlobalBuffer`` and ``LocalBuffer`` hold and draw the same
samples, keep the same state keys and raise the same errors. Kind-specific behaviour (the
native background thread, the Python policy's internals) and multi-rank checks live in
test_native_buffer.py, test_python_buffers.py and the mpirun jobs."""
import pickle

import numpy as np
import pytest

from buffer_patterns import check, identify, inclusion_p_value, make_samples, outputs
from buffers import KINDS, RehearsalBuffer, make_buffer

kinds = pytest.mark.parametrize("kind", KINDS)


def make(kind, K=3, N=4, shape=(2, 3), dtype="uint8", num_extras=0, seed=0, **kw):
    return make_buffer(kind, num_classes=K, slots_per_class=N, sample_shape=shape, dtype=dtype,
                       num_extras=num_extras, seed=seed, **kw)


def filled(kind, count=40, num_extras=0, dtype="uint8", shape=(2, 3), seed=0, K=3, N=4):
    buf = make(kind, K, N, shape, dtype, num_extras, seed)
    labels = np.random.default_rng(123).integers(0, K, size=count)
    x, y, e, _ = make_samples(0, labels, 0, shape, dtype, num_extras)
    buf.add(x, y, e)
    return buf


@pytest.fixture(autouse=True)
def _close_native():
    yield
    import gc
    gc.collect()


# ------------------------------------------------------------------ surface

def test_every_kind_satisfies_the_protocol_with_the_same_surface():
    bufs = {kind: make(kind, num_extras=1) for kind in KINDS}
    surfaces = {kind: {m for m in dir(b) if not m.startswith("_")} for kind, b in bufs.items()}
    for kind, buf in bufs.items():
        assert isinstance(buf, RehearsalBuffer), kind
        assert surfaces["native"] <= surfaces[kind], (kind, surfaces["native"] - surfaces[kind])
        assert set(buf.stats()) == set(bufs["native"].stats())
        for name in ("rank", "world_size", "num_classes", "slots_per_class", "sample_shape", "dtype",
                     "num_extras", "closed", "policy", "capacity"):
            assert getattr(buf, name) == getattr(bufs["native"], name), (kind, name)
    keys = {kind: set(b.state()) for kind, b in bufs.items()}
    assert keys["python"] == keys["local"] == keys["native"], keys
    for buf in bufs.values():
        buf.close()


def test_factory_refuses_an_unknown_kind():
    with pytest.raises(ValueError, match="unknown buffer kind 'nil'.*native, python, local"):
        make("nil")


# ------------------------------------------------------------------ representatives

@kinds
@pytest.mark.parametrize("dtype", ["uint8", "float32", np.float16])
def test_representatives_are_inserted_samples(kind, dtype):
    buf = filled(kind, count=50, num_extras=3, dtype=dtype)
    ox, oy, oe = outputs(buf, 20)
    for r in (1, 5, 12, 20):
        n = buf.sample(r, ox, oy, oe)
        assert n == min(r, 12)
        who = [check(ox[i], oy[i], oe[i], 3) for i in range(n)]
        assert len(set(who)) == n
    st = buf.stats()
    assert st["seen_per_class"] == np.bincount(np.random.default_rng(123).integers(0, 3, size=50),
                                               minlength=3).tolist()
    assert st["filled_per_class"] == [4, 4, 4] and st["filled"] == 12 and st["draws"] == 4
    assert st["bytes_read_remote"] == 0 and st["bytes_read_local"] > 0
    assert buf.dtype == np.dtype(dtype) and buf.sample_shape == (2, 3)
    assert (buf.rank, buf.world_size, buf.num_classes, buf.slots_per_class) == (0, 1, 3, 4)
    buf.close()


@kinds
def test_partially_filled_and_empty(kind):
    buf = make(kind, shape=(6,))
    ox, oy, _ = outputs(buf, 8)
    assert buf.sample(8, ox, oy) == 0
    x, y, _, _ = make_samples(0, [2, 2, 0], 0, (6,), "uint8")
    buf.add(x, y)
    assert buf.sample(8, ox, oy) == 3
    assert sorted(check(ox[i], oy[i]) for i in range(3)) == [(0, 0, 2), (0, 2, 0), (0, 2, 1)]
    assert (oy[3:] == -1).all()
    buf.close()


@kinds
def test_torch_cpu_tensors_in_and_out(kind):
    torch = pytest.importorskip("torch")
    buf = make(kind, 2, 3, (4,), dtype="float16", num_extras=2)
    x, y, e, _ = make_samples(0, [0, 1, 1, 0, 1], 0, (4,), "float16", 2)
    buf.add(torch.from_numpy(x), torch.from_numpy(y).int(), torch.from_numpy(e))
    ox, oy, oe = torch.zeros(4, 4, dtype=torch.float16), torch.zeros(4, dtype=torch.int64), torch.zeros(4, 2)
    n = buf.sample(4, ox, oy, oe)
    for i in range(n):
        check(ox[i].numpy(), int(oy[i]), oe[i].numpy(), 2)
    with pytest.raises(ValueError, match="x must be C-contiguous"):
        buf.add(torch.zeros(4, 5, dtype=torch.float16).t(), torch.zeros(5, dtype=torch.int64), torch.zeros(5, 2))
    buf.close()


@kinds
@pytest.mark.parametrize("policy", ["fixed", "adaptive"])
def test_draws_uniform_over_filled_slots(kind, policy):
    """Half-filled classes included; r distinct slots per draw (chi-square)."""
    K, N, r, draws = 4, 8, 10, 600
    labels = np.repeat(np.arange(K), [8, 4, 0, 6])
    buf = make(kind, K, N, (6,), seed=3) if policy == "fixed" else \
        make_buffer(kind, sample_shape=(6,), capacity=32, seed=3)
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
    buf.close()


@kinds
def test_reservoir_holds_each_sample_with_probability_n_over_m(kind):
    """After M samples of a class, each is held with probability N/M (many classes and seeds,
    batches of 70 that hit a slot twice); a policy biased to recent samples fails the same test."""
    K, N, M, seeds = 25, 4, 16, 40
    labels = np.tile(np.arange(K), M)  # interleaved classes: the m-th of class c has id m*K + c
    x, y, _, _ = make_samples(0, labels, 0, (6,), "uint8")
    hits = np.zeros(M, np.int64)
    for seed in range(seeds):
        with make(kind, K, N, (6,), seed=seed) as buf:
            for first in range(0, len(y), 70):
                buf.add(x[first:first + 70], y[first:first + 70])
            for sample in buf.state()["samples"]:
                hits[identify(sample)[2] // K] += 1
    assert hits.sum() == seeds * K * N
    assert inclusion_p_value(hits, N / M) > 1e-3, hits

    rng, biased = np.random.default_rng(0), np.zeros(M, np.int64)
    for _ in range(seeds * K):  # "replace a random slot with probability 1/2": recency bias
        slots = list(range(N))
        for m in range(N, M):
            if rng.random() < 0.5:
                slots[rng.integers(N)] = m
        biased[slots] += 1
    assert inclusion_p_value(biased, N / M) < 1e-6, biased


# ------------------------------------------------------------------ local slots: add -> slots, read, write_extras

@kinds
@pytest.mark.parametrize("policy", ["fixed", "adaptive"])
def test_add_returns_the_slot_each_sample_took(kind, policy):
    buf = make(kind, 3, 2, (6,), num_extras=2) if policy == "fixed" else \
        make_buffer(kind, sample_shape=(6,), capacity=6, num_extras=2)
    labels = np.random.default_rng(0).integers(0, 3, size=30)
    for first in range(0, 30, 5):  # batches of 5, so classes fill and then evict
        x, y, e, _ = make_samples(0, labels[first:first + 5], first, (6,), "uint8", 2)
        slots = buf.add(x, y, e)
        assert slots.dtype == np.int64 and slots.shape == (5,)
        kept = np.flatnonzero(slots >= 0)
        assert len(set(slots[kept].tolist())) == len(kept)  # one sample per slot
        ox, oy, oe = outputs(buf, 5)
        buf.read(slots[kept], ox, oy, oe)
        for row, i in enumerate(kept):
            assert check(ox[row], oy[row], oe[row], 2) == (0, int(y[i]), first + i)
    held = np.sort(np.flatnonzero(buf.state()["labels"] >= 0))
    assert len(held) == 6
    buf.close()


@kinds
def test_write_extras_rewrites_rows_in_place_and_survives_state(kind):
    buf = filled(kind, num_extras=3)
    slots = np.array([0, 5, 9], np.int64)
    new = np.arange(9, dtype=np.float32).reshape(3, 3) + 100
    buf.write_extras(slots, new)
    ox, oy, oe = outputs(buf, 3)
    buf.read(slots, ox, oy, oe)
    assert np.array_equal(oe, new)
    state = buf.state()
    assert np.array_equal(state["extras"][slots], new)
    other = make(kind, num_extras=3)
    other.load_state(pickle.loads(pickle.dumps(state)))
    other.read(slots, ox, oy, oe)
    assert np.array_equal(oe, new)
    others = np.setdiff1d(np.arange(12), slots)
    assert not (state["extras"][others] >= 100).any()  # nothing else touched
    buf.close()
    other.close()


@kinds
def test_read_and_write_extras_refuse_bad_slots(kind):
    buf = make(kind, num_extras=2)
    x, y, e, _ = make_samples(0, [0, 1], 0, (2, 3), "uint8", 2)
    buf.add(x, y, e)
    ox, oy, oe = outputs(buf, 2)
    for call in (lambda s: buf.read(s, ox, oy, oe), lambda s: buf.write_extras(s, np.zeros((1, 2), np.float32))):
        with pytest.raises(ValueError, match=r"slots must be in \[0, 12\), got 12"):
            call(np.array([12], np.int64))
        with pytest.raises(ValueError, match="slot 1 is empty"):  # fixed: class 0 owns slots 0-3
            call(np.array([1], np.int64))
    with pytest.raises(ValueError, match="extras has"):
        buf.write_extras(np.array([0], np.int64), np.zeros((2, 2), np.float32))
    plain = make(kind)
    plain.add(x, y)
    with pytest.raises(ValueError, match=r"this buffer stores no extras \(num_extras=0\)"):
        plain.write_extras(np.array([0], np.int64), np.zeros((1, 0), np.float32))
    buf.close()
    plain.close()


@kinds
def test_out_where_names_the_owner_and_slot_of_each_row(kind):
    buf = filled(kind, num_extras=2)
    ox, oy, oe = outputs(buf, 8)
    where = np.full((8, 2), -7, np.int64)
    n = buf.sample(8, ox, oy, oe, where)
    assert n == 8 and (where[:n, 0] == 0).all()
    rx, ry, re = outputs(buf, 8)
    buf.read(where[:n, 1].copy(), rx, ry, re)
    assert np.array_equal(rx, ox) and np.array_equal(ry, oy) and np.array_equal(re, oe)
    buf.start(8, ox, oy, oe, where)
    assert buf.wait() == 8
    buf.read(where[:n, 1].copy(), rx, ry, re)
    assert np.array_equal(rx, ox)
    buf.close()


# ------------------------------------------------------------------ determinism and state

def draws(buf, r=5, times=4):
    ox, oy, oe = outputs(buf, r)
    out = []
    for _ in range(times):
        n = buf.sample(r, ox, oy, oe)
        out.append(np.concatenate([ox[:n].reshape(n, -1).astype(np.float64), oy[:n, None],
                                   *([oe[:n]] if oe is not None else [])], axis=1))
    return np.stack(out)


@kinds
def test_same_seed_same_draws_and_state_round_trip(kind):
    a, b = filled(kind, num_extras=2, seed=4), filled(kind, num_extras=2, seed=4)
    assert np.array_equal(draws(a), draws(b))
    assert not np.array_equal(draws(a), draws(filled(kind, num_extras=2, seed=5)))
    saved = a.state()
    expected = draws(a)
    c = filled(kind, count=3, num_extras=2, seed=77)
    c.load_state(saved)
    assert np.array_equal(draws(c), expected)
    assert c.stats()["seen_per_class"] == a.stats()["seen_per_class"]
    d = make(kind, num_extras=2)  # empty
    d.load_state(pickle.loads(pickle.dumps(saved)))
    assert np.array_equal(draws(d), expected)


@kinds
def test_batching_does_not_change_the_buffer(kind):
    labels = np.random.default_rng(1).integers(0, 3, size=200)
    x, y, e, _ = make_samples(0, labels, 0, (5,), "float32", 2)
    one, many = (make(kind, 3, 4, (5,), "float32", 2, seed=9) for _ in range(2))
    one.add(x, y, e)
    for i in range(200):
        many.add(x[i:i + 1], y[i:i + 1], e[i:i + 1])
    a, b = one.state(), many.state()
    for key in ("samples", "extras", "labels", "seen_per_class", "filled_per_class"):
        assert np.array_equal(a[key], b[key]), key


@kinds
def test_load_state_refuses_other_kinds_and_shapes(kind):
    state = filled(kind).state()
    other = "local" if kind != "local" else "python"
    with pytest.raises(ValueError, match="state is of kind"):
        filled(other).load_state(state)
    for changed, key in ((dict(shape=(3, 2)), "sample_shape"), (dict(N=5), "slots_per_class"),
                         (dict(dtype="float32"), "dtype"), (dict(num_extras=1), "num_extras")):
        with pytest.raises(ValueError, match=f"state does not fit this buffer: .*{key}"):
            filled(kind, **changed).load_state(state)
    with pytest.raises(ValueError, match="state is of kind None"):
        filled(kind).load_state({"samples": 1})
    with pytest.raises(TypeError, match="state must be a dict"):
        filled(kind).load_state([1])
    broken = dict(state)
    del broken["draw_generator"]
    with pytest.raises(ValueError, match="state lacks draw_generator"):
        filled(kind).load_state(broken)


# ------------------------------------------------------------------ lifetime

@kinds
def test_closed_buffer_refuses_every_call(kind):
    buf = filled(kind, num_extras=1)
    ox, oy, oe = outputs(buf, 6)
    buf.close()
    buf.close()
    assert buf.closed
    slots = np.zeros(1, np.int64)
    for call in (lambda: buf.add(ox, oy, oe), lambda: buf.sample(6, ox, oy, oe), buf.stats, buf.state,
                 lambda: buf.start(6, ox, oy, oe), buf.wait, lambda: buf.read(slots, ox, oy, oe),
                 lambda: buf.write_extras(slots, oe[:1])):
        with pytest.raises(RuntimeError, match="buffer is closed"):
            call()
    with make(kind) as other:
        assert not other.closed
    assert other.closed


# ------------------------------------------------------------------ bad input: one message whatever the kind

class FakeCudaTensor:
    def __dlpack_device__(self):
        return (2, 0)

    def __dlpack__(self, **kwargs):
        raise AssertionError("must not be read")


def bad_adds():
    def u8(*s):
        return np.zeros(s, np.uint8)

    y4, e4 = np.zeros(4, np.int64), np.zeros((4, 2), np.float32)
    return [
        ((u8(4, 2, 4), y4, e4), ValueError, r"x has shape \(4, 2, 4\), expected \(n, 2, 3\)"),
        ((np.zeros((4, 2, 3), np.float32), y4, e4), ValueError, "x has dtype float32, expected uint8"),
        ((u8(3, 4, 2).transpose(1, 2, 0)[:, :2, :], y4, e4), ValueError, r"x must be C-contiguous"),
        ((u8(4, 2, 3), np.array([0, 1, 3, 0]), e4), ValueError, r"label 3 \(sample 2\) is outside \[0, 3\)"),
        ((u8(4, 2, 3), np.array([0, -1, 2, 0]), e4), IndexError, r"label -1 \(sample 1\) is outside"),
        ((u8(4, 2, 3), y4.astype(np.float32), e4), ValueError, r"y has dtype float32, expected int64 \(or int32\)"),
        ((u8(4, 2, 3), np.zeros(3, np.int64), e4), ValueError, "y has 3 labels but x has 4 samples"),
        ((u8(4, 2, 3), y4, None), ValueError, r"extras is required \(num_extras=2\)"),
        ((u8(4, 2, 3), y4, np.zeros((4, 3), np.float32)), ValueError, r"extras has shape \(4, 3\), expected \(n, 2\)"),
        ((u8(4, 2, 3), y4, np.zeros((4, 2), np.float64)), ValueError, "extras has dtype float64, expected float32"),
        ((u8(4, 2, 3), y4, np.zeros((3, 2), np.float32)), ValueError, "extras has 3 rows but x has 4 samples"),
        ((FakeCudaTensor(), y4, e4), ValueError, r"x is on .*: it must be on the CPU \(use \.cpu\(\)\)"),
        (([[1, 2, 3]], y4, e4), TypeError, "x must be a numpy array or a CPU tensor, got list"),
    ]


@kinds
@pytest.mark.parametrize("case", range(len(bad_adds())))
def test_bad_add_same_message(kind, case):
    args, error, message = bad_adds()[case]
    buf = make(kind, num_extras=2)
    with pytest.raises(error, match=message):
        buf.add(*args)
    assert buf.stats()["seen_per_class"] == [0, 0, 0]
    buf.close()


@kinds
def test_unexpected_extras_same_message(kind):
    buf = make(kind)
    with pytest.raises(ValueError, match="extras given but the buffer has num_extras=0"):
        buf.add(np.zeros((1, 2, 3), np.uint8), np.zeros(1, np.int64), np.zeros((1, 1), np.float32))
    ox, oy, _ = outputs(buf, 2)
    with pytest.raises(ValueError, match="out_extras given but the buffer has num_extras=0"):
        buf.sample(2, ox, oy, np.zeros((2, 1), np.float32))
    buf.close()


@kinds
def test_bad_sample_same_message(kind):
    buf = filled(kind, num_extras=2)
    ox, oy, oe = outputs(buf, 8)
    readonly = ox.copy()
    readonly.flags.writeable = False
    cases = [
        ((0, ox, oy, oe), "r must be positive, got 0"),
        ((-2, ox, oy, oe), "r must be positive, got -2"),
        ((9, ox, oy, oe), "output arrays hold 8 rows, need at least r=9"),
        ((4, ox.astype(np.float32), oy, oe), "out_x has dtype float32, expected uint8"),
        ((4, np.zeros((8, 3, 2), np.uint8), oy, oe), r"out_x has shape \(8, 3, 2\), expected \(n, 2, 3\)"),
        ((4, ox, oy[:3], oe), "output arrays hold 3 rows, need at least r=4"),
        ((4, ox, oy.astype(np.float64), oe), "out_y has dtype float64, expected int64"),
        ((4, ox, oy.astype(np.int32), oe), "out_y has dtype int32, expected int64"),
        ((4, ox, oy, None), r"out_extras is required \(num_extras=2\)"),
        ((4, ox, oy, oe[:2]), "output arrays hold 2 rows, need at least r=4"),
        ((4, ox, oy, oe.astype(np.float16)), "out_extras has dtype float16, expected float32"),
        ((4, np.zeros((8, 3, 2), np.uint8).transpose(0, 2, 1), oy, oe), "out_x must be C-contiguous"),
        ((4, FakeCudaTensor(), oy, oe), "out_x is on .*: it must be on the CPU"),
        ((4, readonly, oy, oe), "out_x is read-only"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            buf.sample(*args)
        with pytest.raises(ValueError, match=message):
            buf.start(*args)
    assert buf.stats()["draws"] == 0
    assert buf.sample(4, ox, oy, oe) == 4  # nothing was left pending by the failures
    buf.close()


@kinds
def test_label_errors_are_index_and_value_errors(kind):
    buf = make(kind)
    with pytest.raises(IndexError, match=r"label -1 \(sample 0\) is outside \[0, 3\)") as caught:
        buf.add(np.zeros((1, 2, 3), np.uint8), np.array([-1]))
    assert isinstance(caught.value, ValueError) and type(caught.value).__name__ == "LabelError"
    buf.close()


@kinds
@pytest.mark.parametrize("kwargs, message", [
    (dict(num_classes=0), r"num_classes must be in \[1, inf\), got 0"),
    (dict(slots_per_class=2.0), "slots_per_class must be an int, got 2.0"),
    (dict(sample_shape=(3, 0)), r"sample_shape entries must be in \[1, inf\), got \(3, 0\)"),
    (dict(dtype="int16"), r"dtype must be one of uint8, float32, float16 \(native byte order\), got 'int16'"),
    (dict(num_extras=-1), r"num_extras must be in \[0, inf\), got -1"),
    (dict(seed=-1), r"seed must be in \[0, 2\*\*64\), got -1"),
    (dict(policy="lifo"), "policy must be 'adaptive' or 'fixed', got 'lifo'"),
    (dict(capacity=5), "slots_per_class is for the fixed policy"),
])
def test_bad_construction_same_message(kind, kwargs, message):
    args = dict(num_classes=3, slots_per_class=4, sample_shape=(2, 3))
    args.update(kwargs)
    with pytest.raises(ValueError, match="invalid Buffer arguments: " + message):
        make_buffer(kind, **args)

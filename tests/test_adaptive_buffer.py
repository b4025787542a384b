"""The adaptive insertion policy (the default), on the native buffer and its Python twins.

The statistical rules run in tests/mpi_jobs/adaptive_checks.py at 1, 2 and 4 ranks; here, in
one process: the rules' power (a biased policy fails the inclusion test), labels never
declared, bad input, and state round trips, parametrized over the kinds.
"""
import sys
from pathlib import Path

import numpy as np
import pytest

from buffer_patterns import check, inclusion_p_value, make_samples, outputs
from buffers import buffer_class

JOBS = Path(__file__).parent / "mpi_jobs"

KINDS = ["native", "python", "local"]
kinds = pytest.mark.parametrize("kind", KINDS)
pytestmark = pytest.mark.timeout(300)


def filled(kind, labels, capacity=10, seed=0, num_extras=0, **kwargs):
    buf = buffer_class(kind)(sample_shape=(6,), capacity=capacity, seed=seed, num_extras=num_extras, **kwargs)
    x, y, e, _ = make_samples(0, labels, 0, (6,), "uint8", num_extras)
    buf.add(x, y, e)
    return buf


@pytest.mark.parametrize("ranks", [1, 2, 4])
def test_adaptive_rules_on_every_kind(mpirun, ranks):
    """Inclusion probability after quotas shrink (chi-square), no slot wasted, class balance
    within one slot, labels 0, 7, 42, ..., global draws uniform over unequal fills."""
    proc = mpirun(ranks, [sys.executable, str(JOBS / "adaptive_checks.py"), *KINDS], timeout=280)
    for check_name in ("inclusion", "balance", "determinism"):
        for kind in KINDS:
            assert f"ok {check_name} {kind}" in proc.stdout, proc.stdout


def test_native_adaptive_uniform_and_torn_reads_on_one_rank(mpirun):
    """The native multi-rank uniformity and torn-read checks, adaptive, at one rank too."""
    proc = mpirun(1, [sys.executable, str(JOBS / "native_checks.py"), "uniform_adaptive", "no_torn_reads_adaptive"],
                  timeout=200)
    assert "ok uniform_adaptive" in proc.stdout and "ok no_torn_reads_adaptive" in proc.stdout, proc.stdout


def test_inclusion_test_rejects_a_biased_eviction():
    """The chi-square of adaptive_checks has power: evicting the newest sample of a class when
    quotas shrink (instead of a uniform one) is rejected at the same sizes."""
    rng, trials = np.random.default_rng(0), 600
    hits = np.zeros(30, np.int64)
    for _ in range(trials):
        held = list(range(12))  # class 0 alone: 12 of its 30 samples, by reservoir
        for m in range(12, 30):
            j = rng.integers(m + 1)
            if j < 12:
                held[j] = m
        held.sort()
        hits[held[:4]] += 1  # shrink to 4 by dropping the newest 8: biased to old samples
    assert inclusion_p_value(hits, 4 / 30) < 1e-6, hits


@kinds
def test_labels_never_declared(kind):
    buf = filled(kind, [42, 0, 7, 42, 7, 0, 42], capacity=5)
    stats = buf.stats()
    assert stats["classes"] == [42, 0, 7] and stats["seen_per_class"] == [3, 2, 2]
    assert stats["filled"] == 5 and stats["capacity"] == 5 and buf.policy == "adaptive"
    ox, oy, _ = outputs(buf, 5)
    assert buf.sample(5, ox, oy) == 5
    assert sorted(check(ox[i], oy[i])[1] for i in range(5)) == sorted(oy.tolist())
    assert set(oy.tolist()) <= {0, 7, 42}
    buf.close()


@kinds
def test_fixed_policy_stays_available(kind):
    buf = buffer_class(kind)(3, 2, (6,), policy="fixed")
    x, y, _, _ = make_samples(0, [0, 1, 2, 2, 2], 0, (6,), "uint8")
    buf.add(x, y)
    stats = buf.stats()
    assert buf.policy == "fixed" and stats["capacity"] == 6 and stats["filled_per_class"] == [1, 1, 2]
    buf.close()


@kinds
@pytest.mark.parametrize("args, labels, error, message", [
    (dict(capacity=4), [0, -1], IndexError, r"label -1 \(sample 1\) is negative"),
    (dict(capacity=4, num_classes=5), [0, 5], IndexError, r"label 5 \(sample 1\) is outside \[0, 5\)"),
    (dict(capacity=0), None, ValueError, "capacity"),
    (dict(capacity=4, slots_per_class=2), None, ValueError, "slots_per_class is for the fixed policy"),
    (dict(), None, ValueError, "needs capacity|capacity"),
])
def test_bad_input(kind, args, labels, error, message):
    cls = buffer_class(kind)
    if labels is None:
        with pytest.raises(error, match=message):
            cls(sample_shape=(6,), policy="adaptive", **args)
        return
    buf = cls(sample_shape=(6,), **args)
    x, y, _, _ = make_samples(0, [0, 1], 0, (6,), "uint8")
    with pytest.raises(error, match=message) as caught:  # a LabelError: IndexError and ValueError
        buf.add(x, np.array(labels))
    assert isinstance(caught.value, ValueError)
    assert buf.stats()["filled"] == 0  # nothing stored
    buf.close()


@kinds
def test_state_round_trip_and_damaged_state(kind):
    labels = np.random.default_rng(2).choice([3, 9, 27], size=60)
    a = filled(kind, labels, seed=4, num_extras=2)
    state = a.state()
    b = filled(kind, [1, 1], seed=99, num_extras=2)
    b.load_state(state)
    for _ in range(3):
        oa, ob = outputs(a, 4), outputs(b, 4)
        assert a.sample(4, *oa) == b.sample(4, *ob) == 4
        assert all(np.array_equal(p, q) for p, q in zip(oa, ob))
    x, y, e, _ = make_samples(0, [5] * 8, 100, (6,), "uint8", 2)  # a new class after the load
    a.add(x, y, e)
    b.add(x, y, e)
    assert np.array_equal(a.state()["labels"], b.state()["labels"])
    for key in ("classes", "seen_per_class", "filled_per_class", "filled"):
        assert a.stats()[key] == b.stats()[key], key

    before = b.state()
    bad_labels = dict(state, labels=np.where(state["labels"] == 9, 8, state["labels"]))
    bad_seen = dict(state, seen_per_class=np.zeros_like(np.asarray(state["seen_per_class"])))
    for damaged, message in ((bad_labels, "label 8|not among the classes"), (bad_seen, "seen=0|inconsistent")):
        with pytest.raises(ValueError, match=message):
            b.load_state(damaged)
        after = b.state()
        assert np.array_equal(after["labels"], before["labels"]) and np.array_equal(after["samples"], before["samples"])
    a.close()
    b.close()


@kinds
@pytest.mark.parametrize("bad", [-1, 3, 7])
def test_fixed_state_with_labels_outside_their_slots_is_refused(kind, bad):
    """A fixed layout's slot c*N+j holds class c or nothing: a loaded state whose labels say
    otherwise (out of [0, K), or -1 in a filled slot) would be drawn later, so it is refused."""
    a = buffer_class(kind)(3, 2, (6,), policy="fixed")
    x, y, _, _ = make_samples(0, [0, 1, 2, 2], 0, (6,), "uint8")
    a.add(x, y)
    state = a.state()
    labels = np.array(state["labels"]).copy()
    labels[0] = bad
    b = buffer_class(kind)(3, 2, (6,), policy="fixed")
    with pytest.raises(ValueError, match=f"slot 0 holds label {bad}"):
        b.load_state(dict(state, labels=labels))
    assert b.stats()["filled"] == 0  # nothing loaded
    a.close()
    b.close()

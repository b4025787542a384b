"""Elastic resume: a checkpoint written by N ranks continues on M ranks, the buffer slices
pooled and re-sharded (buffers/reshard.py), data sharding and LR scaling following M."""
import re
from collections import Counter

import numpy as np
import pytest

from buffer_patterns import check, make_samples
from buffers import buffer_class
from buffers.reshard import reshard
from trainer_runs import kill_after, metrics, run_main, start_main

KINDS = ["native", "python"]


def slices(kind, old_world, capacity, per_rank, policy="adaptive", num_extras=2):
    """The states of `old_world` one-rank buffers standing for the slices of an old job's ranks
    (rank r's samples carry r in their bytes), each offered `per_rank` samples of 5 classes."""
    states = []
    for r in range(old_world):
        layout = dict(capacity=capacity) if policy == "adaptive" else dict(num_classes=5, slots_per_class=capacity // 5)
        from mpi4py import MPI

        buf = buffer_class(kind)(sample_shape=(6,), num_extras=num_extras, seed=r, comm=MPI.COMM_SELF,
                                 policy=policy, **layout)
        labels = np.random.default_rng(r).integers(0, 5, size=per_rank)
        x, y, e, _ = make_samples(r, labels, 0, (6,), "uint8", num_extras)
        buf.add(x, y, e)
        states.append(buf.state())
        buf.close()
    return states


def held(state, num_extras=2):
    return Counter(check(x, y, e, num_extras) for x, y, e in zip(state["samples"], state["labels"], state["extras"])
                   if y >= 0)


def seen_of(state):
    return dict(zip(np.asarray(state["classes"]).tolist(), np.asarray(state["seen_per_class"]).tolist()))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("policy", ["adaptive", "fixed"])
@pytest.mark.parametrize("old_world, new_world", [(1, 2), (2, 1), (2, 4), (4, 2)])
def test_reshard_keeps_the_multiset_and_the_seen_counts(kind, policy, old_world, new_world):
    """Total capacity kept (per-rank capacity x old/new): the same samples, extras and all, as a
    multiset; each class's seen total is carried over; every new state loads into a buffer."""
    from mpi4py import MPI

    capacity = 40 // old_world * old_world // new_world if policy == "adaptive" else 40
    old = slices(kind, old_world, 40 // old_world if policy == "adaptive" else 40, per_rank=60)
    layout = dict(capacity=capacity) if policy == "adaptive" else dict(num_classes=5, slots_per_class=capacity // 5)
    new, totals = [], Counter()
    for rank in range(new_world):
        buf = buffer_class(kind)(sample_shape=(6,), num_extras=2, seed=9, comm=MPI.COMM_SELF, policy=policy, **layout)
        state, summary = reshard(old, buf.state(), rank, new_world)
        buf.load_state(state)  # accepted: consistent counters and labels
        assert buf.stats()["filled"] == sum(held(state).values())
        new.append(state)
        totals.update(seen_of(state))
        buf.close()
    before = sum((held(s) for s in old), Counter())
    after = sum((held(s) for s in new), Counter())
    if policy == "adaptive" or new_world >= old_world:
        assert after == before and summary["held_after"] == summary["held_before"]
    else:  # fixed, fewer ranks with the same N: each class cut to new_world x N, a sub-multiset
        assert not after - before
    expected = Counter()
    for s in old:
        expected.update(seen_of(s))
    if policy == "adaptive":
        assert {c: v for c, v in totals.items() if v} == dict(expected)
    fills = [sum(held(s).values()) for s in new]
    assert max(fills) - min(fills) <= 5  # dealt evenly, within a sample per class


@pytest.mark.parametrize("kind", KINDS)
def test_reshard_shrinking_capacity_cuts_the_largest_classes_uniformly(kind):
    old = slices(kind, 2, 40, per_rank=200)  # 80 held
    from mpi4py import MPI

    buf = buffer_class(kind)(sample_shape=(6,), num_extras=2, seed=9, comm=MPI.COMM_SELF, capacity=25)
    state, summary = reshard(old, buf.state(), 0, 1)
    buf.load_state(state)
    per_class = buf.stats()["filled_per_class"]
    assert summary["held_after"] == 25 and max(per_class) - min(per_class) <= 1
    assert not held(state) - sum((held(s) for s in old), Counter())
    buf.close()


# ------------------------------------------------------------------ the default experiment

# The default experiment (10 epochs per task: fewer leave the model in a regime where any change
# of trajectory moves the final accuracy by tens of points, resumed or not).
# The learning rate is pinned to the recipe these tolerances were set with (lr 0.02 x ranks,
# momentum 0.9): nil_cpp's tuned default (0.125 x ranks, no momentum) reaches 0.5 on 4 ranks, where
# two uninterrupted runs on different world sizes already differ by several points.
RUN = ["--agent", "nil_cpp", "--checkpoint-every", "1", "--seed", "3", "--backend", "torch",
       "--lr", "0.02", "--momentum", "0.9", "--plots", "false", "--tensorboard", "false"]


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """Uninterrupted runs on each target world size, final average accuracy."""
    root = tmp_path_factory.mktemp("reference")
    return {ranks: metrics(run_main(RUN, root, f"ref{ranks}", ranks=ranks, timeout=600)[1])["final_average_accuracy"]
            for ranks in (1, 2, 4)}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("old_world, new_world", [(1, 2), (2, 1), (2, 4), (4, 2)])
def test_elastic_resume_of_the_default_experiment(tmp_path, references, old_world, new_world):
    proc = start_main(RUN, tmp_path, "run", old_world)
    kill_after(proc, tmp_path / "run/checkpoints/t001-e0005/COMPLETE", timeout=600)  # mid-task 2
    run_main(["--resume", str(tmp_path / "run"), "--backend", "torch"], tmp_path, "ignored", ranks=new_world,
             timeout=600)
    final = metrics(tmp_path / "run")
    assert final["finished"] and final["world_size"] == new_world
    log = (tmp_path / "run/log_rank0.txt").read_text()
    line = re.search(rf"resumed {old_world}-rank checkpoint on {new_world} ranks: buffer re-sharded "
                     rf"\((\d+) of (\d+) samples kept, capacity (\d+) -> (\d+)\), data sharded over {new_world} "
                     rf"ranks, learning rate scaled x[\d.]+", log)
    assert line, log[-3000:]
    kept, had, cap_before, cap_after = map(int, line.groups())
    if cap_after >= cap_before:
        assert kept == had  # nothing lost when the capacity does not shrink
    assert final["task_stats"][-1]["fill"] == 1.0
    # The resumed run trained on both world sizes: it must land within 5 points of an uninterrupted
    # run on one of them (uninterrupted runs on 1, 2 and 4 ranks themselves differ by up to ~8 here).
    gap = min(abs(final["final_average_accuracy"] - references[w]) for w in (new_world, old_world))
    assert gap <= 0.05, (final["final_average_accuracy"], references)

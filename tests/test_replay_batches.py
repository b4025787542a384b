"""The B+R minibatch assembly (agents/replay_batches.py) against a fake buffer, and the task
loop's step records: what the agents and results files rely on, without MPI."""
import numpy as np
import pytest
import torch

from agents.replay_batches import ReplayBatches
from trainer.results import Recorder, StepRecord

SHAPE = (1, 2, 2)


class FakeBuffer:
    """Draw k writes rows whose pixels are 100 + k and labels 10 + k; holds `filled` samples."""

    def __init__(self, filled=100, num_extras=0):
        self.filled, self.num_extras, self.draws, self.pending = filled, num_extras, 0, None

    def start(self, r, out_x, out_y, out_extras=None, out_where=None):
        assert self.pending is None, "a second draw started before wait()"
        n = min(r, self.filled)
        out_x[:n] = 100 + self.draws
        out_y[:n] = 10 + self.draws
        if out_extras is not None:
            out_extras[:n] = float(self.draws)
        if out_where is not None:
            out_where[:n, 0] = 0
            out_where[:n, 1] = torch.arange(n).numpy()
        self.pending, self.draws = n, self.draws + 1

    def wait(self):
        n, self.pending = self.pending, None
        return n


def new_samples(b=4, value=7):
    return torch.full((b, *SHAPE), value, dtype=torch.uint8), torch.arange(b)


@pytest.mark.parametrize("cat", [False, True], ids=["in_place", "concat"])
@pytest.mark.parametrize("prefetch", [False, True])
def test_new_samples_first_then_the_representatives_of_the_draw_before(cat, prefetch):
    buf = FakeBuffer()
    batches = ReplayBatches(buf, 4, 3, SHAPE, 0, torch.device("cpu"), prefetch=prefetch, cat=cat)
    batches.collect()
    first = batches.batch(*new_samples())
    assert (first.b, first.n) == (4, 0) and len(first.y) == 4 and first.extras is None  # no draw yet
    batches.launch()  # step 0's insertion starts draw 0
    for step in range(1, 4):
        batches.collect()
        mb = batches.batch(*new_samples(value=step))
        assert (mb.b, mb.n) == (4, 3)
        assert (mb.x[:4] == step).all() and mb.y[:4].tolist() == [0, 1, 2, 3]
        assert (mb.x[4:] == 100 + step - 1).all() and (mb.y[4:] == 10 + step - 1).all()  # the previous draw
        batches.launch()
    assert buf.draws == 4


def test_a_draw_in_flight_never_writes_into_the_batch_being_trained_on():
    buf = FakeBuffer()
    batches = ReplayBatches(buf, 2, 2, SHAPE, 0, torch.device("cpu"), prefetch=True, cat=False)
    batches.launch()
    batches.collect()
    mb = batches.batch(*new_samples(b=2))
    batches.launch()  # the next draw lands in the other slot
    assert (mb.x[2:] == 100).all()  # unchanged while draw 1 is in flight
    batches.collect()
    assert (batches.batch(*new_samples(b=2)).x[2:] == 101).all()


def test_fewer_filled_than_r_and_a_short_last_batch():
    buf = FakeBuffer(filled=2)
    batches = ReplayBatches(buf, 4, 3, SHAPE, 0, torch.device("cpu"), prefetch=False, cat=False)
    batches.launch()
    mb = batches.batch(*new_samples(b=3))  # the epoch's last, short batch: concatenated instead
    assert (mb.b, mb.n) == (3, 2) and len(mb.y) == 5 and (mb.x[3:] == 100).all()


def test_extras_and_where_travel_with_the_representatives_and_through_a_checkpoint():
    buf = FakeBuffer(num_extras=3)
    batches = ReplayBatches(buf, 2, 3, SHAPE, 3, torch.device("cpu"), prefetch=True, cat=False, track_where=True)
    batches.launch()
    state = batches.state_dict()  # finishes the draw in flight
    assert state["n"] == 3 and state["where"][:, 1].tolist() == [0, 1, 2]
    fresh = ReplayBatches(FakeBuffer(num_extras=3), 2, 3, SHAPE, 3, torch.device("cpu"), prefetch=True, cat=False,
                          track_where=True)
    fresh.load_state_dict(state)
    for b in (batches, fresh):
        mb = b.batch(*new_samples(b=2))
        assert mb.n == 3 and (mb.extras == 0.0).all() and mb.extras.shape == (3, 3)
        assert mb.where.tolist() == [[0, 0], [0, 1], [0, 2]]


def test_step_records_are_named_and_survive_a_checkpoint():
    rec = Recorder(num_tasks=2, world_size=1)
    rec.add_step(StepRecord(0, 0, 0, samples=36, load_s=0.1, wait_s=0.2, train_s=0.7, loss=2.0))
    rec.add_step(StepRecord(0, 0, 1, samples=36, load_s=0.1, wait_s=0.0, train_s=0.9, loss=1.5))
    summary = rec.timing_summary()
    assert summary["steps"] == 2 and summary["mean_wait_s"] == pytest.approx(0.1)
    assert summary["samples_per_s_rank"] == pytest.approx(72 / 2.0)
    again = Recorder(num_tasks=2, world_size=1)
    again.load_state_dict(rec.state_dict())
    assert again.steps == rec.steps and again.steps[1].loss == 1.5 and again.steps[0].wait_s == 0.2
    assert StepRecord._fields == ("task", "epoch", "step", "samples", "load_s", "wait_s", "train_s", "loss")
    assert np.isfinite(list(summary.values())).all()

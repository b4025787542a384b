"""Which slots a draw reads (the twin of cpp_loader's sampler.cpp): n = min(r, filled)
distinct filled slots, uniform over every rank's filled slots, grouped by owner rank
(ascending; within a rank, in draw order)."""
import numpy as np


def draw_slots(filled: np.ndarray, stride: int, r: int, rng: np.random.Generator):
    """filled: (ranks, blocks) fill counts, a block being consecutive filled slots that start at
    slot block * stride (fixed policy: one block per class; adaptive: one block) ->
    (owner, slot) arrays of the n drawn slots, grouped by owner."""
    flat = filled.reshape(-1)
    total = int(flat.sum())
    n = min(r, total)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    cum = np.cumsum(flat)
    picks = rng.choice(total, n, replace=False)
    cell = np.searchsorted(cum, picks, side="right")  # owner * blocks + block
    blocks = filled.shape[1]
    owner = cell // blocks
    slots = (cell % blocks) * stride + picks - (cum[cell] - flat[cell])
    order = np.argsort(owner, kind="stable")
    return owner[order], slots[order]

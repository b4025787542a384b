"""Seed arithmetic shared by the trainer and the agents: one run seed (--seed) spread into the
separate random streams a run draws from (data order per task, the buffer's per rank)."""

MAX_SEED = 2**32 - 1  # numpy's seeds stop here: --seed is checked against it
SEED_STRIDE = 1_000_003  # a prime larger than any task or rank count


def stream_seed(seed: int, offset: int) -> int:
    """The seed of stream ``offset`` (a task index, a rank) of run seed ``seed``: distinct for
    every (seed, offset) with 0 <= offset < SEED_STRIDE."""
    return seed * SEED_STRIDE + offset

"""Splitting a task's sample indices across data-parallel ranks.

Every rank calls these with the same arguments except ``rank`` and gets its own part;
no communication is needed because the shuffle depends only on (seed, epoch).
"""
import numpy as np


def _check(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")


def shard_epoch(indices, rank: int, world_size: int, seed: int, epoch: int) -> np.ndarray:
    """This rank's training indices for one epoch.

    A permutation seeded by (seed, epoch), the same on every rank, truncated to a multiple
    of ``world_size`` (fewer than ``world_size`` samples are dropped this epoch); rank r takes
    elements r, r + world_size, ... So parts are disjoint, equal in size, and reshuffled
    every epoch.
    """
    _check(rank, world_size)
    indices = np.asarray(indices, dtype=np.int64)
    perm = np.random.default_rng([int(seed), int(epoch)]).permutation(len(indices))
    usable = len(indices) - len(indices) % world_size
    return indices[perm[:usable]][rank::world_size]


def shard_eval(indices, rank: int, world_size: int) -> np.ndarray:
    """This rank's evaluation indices: contiguous, disjoint parts covering all indices
    (sizes differ by at most one, the first ranks taking the extra ones)."""
    _check(rank, world_size)
    return np.array_split(np.asarray(indices, dtype=np.int64), world_size)[rank]

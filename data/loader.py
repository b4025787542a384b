"""Batches of uint8 samples, decoded in DataLoader workers when asked to."""
import numpy as np
import torch
from torch.utils.data import DataLoader

from .dataset import Split


class _Batches(torch.utils.data.Dataset):
    """Item b is the whole batch ``split.take(indices[b * batch_size:(b + 1) * batch_size])``."""

    def __init__(self, split: Split, indices, batch_size: int, drop_last: bool):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.split = split
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size = batch_size
        n = len(self.indices)
        self.num_batches = n // batch_size if drop_last else -(-n // batch_size)

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, b: int):
        if not 0 <= b < self.num_batches:
            raise IndexError(b)
        x, y = self.split.take(self.indices[b * self.batch_size:(b + 1) * self.batch_size])
        return x.contiguous(), y.contiguous()  # the rehearsal buffer reads rows in place


def make_loader(split: Split, indices, batch_size: int, workers: int = 0, pin_memory: bool = False,
                drop_last: bool = False) -> DataLoader:
    """Iterate ``(x uint8 (b, C, H, W), y int64 (b,))`` over ``indices`` in the order given.

    Shuffling is the caller's (see ``shard_epoch``). Each batch is one ``split.take`` call,
    made in one of ``workers`` worker processes (none: in this process); workers are not
    persistent, so each pass over the loader starts them afresh.
    """
    return DataLoader(_Batches(split, indices, batch_size, drop_last), batch_size=None,
                      shuffle=False, num_workers=workers, pin_memory=pin_memory,
                      persistent_workers=False)

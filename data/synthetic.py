"""A synthetic dataset of any shape, for benchmarks: deterministic, uint8, learnable.

Each class has a fixed random pattern (a 4x4 grid of grey levels per channel in
48..207, enlarged to H x W); a sample is its class pattern plus uniform noise in
-64..64, clipped to 0..255. Labels are balanced (sample i of a shuffled list has
class i mod K). Samples are generated on demand from (seed, split, index), so a
sample is the same whatever batch it is drawn in, and a split of 3x224x224 images
costs no memory.

Options: num_classes (10), shape ([3, 32, 32]), train_size (2000), test_size (500), seed (0),
in_memory (false: true generates every sample once at load and serves batches from one uint8
array, so a benchmark measures the model and the buffer rather than the noise generator).
"""
import numpy as np
import torch

from common.errors import UserError

from .dataset import ArraySplit, Dataset, Split, as_indices, channel_stats, check_options

DEFAULTS = {"num_classes": 10, "shape": [3, 32, 32], "train_size": 2000, "test_size": 500, "seed": 0,
            "in_memory": False}
NOISE = 64
GRID = 4


class SyntheticSplit(Split):
    """Samples made on demand: ``patterns[label] + noise(seed, stream, index)``."""

    def __init__(self, patterns: np.ndarray, size: int, seed: int, stream: int):
        self.patterns = patterns  # int16 (K, C, H, W)
        self.seed, self.stream = seed, stream
        labels = np.arange(size, dtype=np.int64) % len(patterns)
        self.targets = np.random.default_rng([seed, stream, 1]).permutation(labels)

    def take(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        idx = as_indices(indices)
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"index out of range for a split of {len(self)} samples")
        idx = idx % max(len(self), 1)
        y = self.targets[idx]
        x = self.patterns[y]  # int16 copy, (n, C, H, W)
        shape = self.patterns.shape[1:]
        for row, i in enumerate(idx):
            rng = np.random.default_rng([self.seed, self.stream, 2, int(i)])
            x[row] += rng.integers(-NOISE, NOISE + 1, size=shape, dtype=np.int16)
        return torch.from_numpy(np.clip(x, 0, 255).astype(np.uint8)), torch.from_numpy(y)


def _positive_int(key, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"synthetic dataset: {key} must be an integer >= {minimum}, got {value!r}")
    return value


def load(root: str | None = None, options: dict | None = None) -> Dataset:
    opts = check_options("synthetic", options, DEFAULTS)
    num_classes = _positive_int("num_classes", opts["num_classes"])
    shape = opts["shape"]
    if not isinstance(shape, (list, tuple)) or len(shape) != 3:
        raise UserError(f"synthetic dataset: shape must be [C, H, W], got {shape!r}")
    shape = tuple(_positive_int("shape", s) for s in shape)
    train_size = _positive_int("train_size", opts["train_size"])
    test_size = _positive_int("test_size", opts["test_size"])
    seed = _positive_int("seed", opts["seed"], minimum=0)

    c, h, w = shape
    grid = np.random.default_rng([seed, 0]).integers(48, 208, size=(num_classes, c, GRID, GRID))
    rows, cols = np.arange(h) * GRID // h, np.arange(w) * GRID // w
    patterns = grid[:, :, rows][:, :, :, cols].astype(np.int16)
    train = SyntheticSplit(patterns, train_size, seed, stream=1)
    test = SyntheticSplit(patterns, test_size, seed, stream=2)
    if not isinstance(opts["in_memory"], bool):
        raise UserError(f"synthetic dataset: in_memory must be true or false, got {opts['in_memory']!r}")
    if opts["in_memory"]:
        train, test = (ArraySplit(*(t.numpy() for t in split.take(np.arange(len(split)))))
                       for split in (train, test))
    sample, _ = train.take(np.arange(min(train_size, 256)))
    mean, std = channel_stats(sample.numpy())
    return Dataset(name="synthetic", num_classes=num_classes, sample_shape=shape,
                   train=train, test=test, mean=mean, std=std,
                   class_names=[f"class_{k}" for k in range(num_classes)])

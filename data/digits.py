"""scikit-learn's handwritten digits: 1,797 grey 8x8 images, 10 classes, shipped with sklearn.

Pixel values 0..16 become uint8 0..255 (``round(x * 255 / 16)``). The split is fixed:
stratified, 25 % test (1,347 train / 450 test), ``random_state=0``, each side in the
original order."""
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from .dataset import ArraySplit, Dataset, channel_stats, check_options

TEST_SIZE = 0.25
SPLIT_SEED = 0


def load(root: str | None = None, options: dict | None = None) -> Dataset:
    check_options("digits", options, {})
    bunch = load_digits()
    images = np.rint(bunch.data * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 1, 8, 8)
    targets = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(np.arange(len(targets)), test_size=TEST_SIZE,
                                           stratify=targets, random_state=SPLIT_SEED)
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    mean, std = channel_stats(images[train_idx])
    return Dataset(name="digits", num_classes=10, sample_shape=(1, 8, 8),
                   train=ArraySplit(images[train_idx], targets[train_idx]),
                   test=ArraySplit(images[test_idx], targets[test_idx]),
                   mean=mean, std=std, class_names=[str(d) for d in range(10)])

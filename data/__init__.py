"""Datasets, continual scenarios, sharding and batch loading.

``load_dataset(name, root, options)`` returns a ``Dataset`` whose splits hand out uint8
batches; ``build_tasks`` cuts it into continual tasks; ``shard_epoch`` / ``shard_eval``
split a task's indices across ranks; ``make_loader`` turns indices into batches.
"""
from typing import Callable

from common.errors import UserError

from . import cifar, digits, imagefolder, mnist, synthetic
from .dataset import ArraySplit, Dataset, FolderSplit, Split
from .loader import make_loader
from .scenarios import DEFAULT_SCENARIO, Task, build_tasks
from .sharding import shard_epoch, shard_eval

# name -> loader(root: str | None, options: dict | None) -> Dataset
DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": digits.load,
    "mnist": mnist.load_mnist,
    "fashion_mnist": mnist.load_fashion_mnist,
    "cifar10": cifar.load_cifar10,
    "cifar100": cifar.load_cifar100,
    "tinyimagenet": imagefolder.load_tinyimagenet,
    "imagenet": imagefolder.load_imagenet,
    "synthetic": synthetic.load,
}
DEFAULT_DATASET = "digits"


def load_dataset(name: str, root: str | None = None, options: dict | None = None) -> Dataset:
    """Load dataset ``name`` from ``root`` (its ``--dataset-dir``; unused by digits/synthetic).

    ``options``: ``image_size`` and a class subset (``num_classes`` or ``classes``) for
    tinyimagenet/imagenet; num_classes, shape, train_size, test_size, seed, in_memory for
    synthetic; none for the others. Raises ``UserError`` for an unknown
    name or option, or for missing files (naming the files and folders expected).

    >>> ds = load_dataset("digits")
    >>> x, y = ds.train.take([0, 1])   # uint8 (2, 1, 8, 8), int64 (2,)
    """
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")
    return DATASETS[name](root, options)


__all__ = ["ArraySplit", "DATASETS", "DEFAULT_DATASET", "DEFAULT_SCENARIO", "Dataset",
           "FolderSplit", "Split", "Task", "build_tasks", "load_dataset", "make_loader",
           "shard_epoch", "shard_eval"]

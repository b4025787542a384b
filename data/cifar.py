"""CIFAR-10 and CIFAR-100 from their python pickles (the ``*-python.tar.gz`` releases, extracted).

``root`` is the folder holding ``cifar-10-batches-py`` / ``cifar-100-python``, or that
folder itself. Each pickle is a dict with ``data`` (uint8, n x 3072, channel-major 32x32)
and ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100); keys are bytes in the original
files (python 2 pickles) and may be str in re-written ones. The meta file, if present,
gives the class names."""
import os
import pickle

import numpy as np

from common.errors import UserError

from .dataset import ArraySplit, Dataset, check_dataset_dir, check_options

SPECS = {
    "cifar10": dict(folder="cifar-10-batches-py", num_classes=10, label_key="labels",
                    train=[f"data_batch_{i}" for i in range(1, 6)], test=["test_batch"],
                    meta="batches.meta", names_key="label_names",
                    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)),
    "cifar100": dict(folder="cifar-100-python", num_classes=100, label_key="fine_labels",
                     train=["train"], test=["test"], meta="meta", names_key="fine_label_names",
                     mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762)),
}


def _unpickle(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="bytes")
    except Exception as exc:  # a corrupt pickle can raise nearly anything
        raise UserError(f"cannot read CIFAR pickle {path}: {exc}") from exc
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read_batches(paths: list[str], label_key: str, num_classes: int):
    images, labels = [], []
    for path in paths:
        batch = _unpickle(path)
        if "data" not in batch or label_key not in batch:
            raise UserError(f"{path}: expected keys 'data' and {label_key!r}, found {sorted(batch)}")
        data = np.asarray(batch["data"])
        try:
            y = np.asarray(batch[label_key])
            if y.dtype.kind not in "iu":
                raise TypeError(f"{y.dtype} values")
            y = y.astype(np.int64)
        except (TypeError, ValueError) as exc:
            raise UserError(f"{path}: {label_key!r} must be integer class indices, got {exc}") from None
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise UserError(f"{path}: 'data' must be uint8 (n, 3072), got {data.dtype} {data.shape}")
        if y.shape != (len(data),):
            raise UserError(f"{path}: {len(data)} images but {label_key!r} has shape {y.shape}")
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise UserError(f"{path}: labels must be in 0..{num_classes - 1}, "
                            f"found {y.min()}..{y.max()}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def _load(name: str, root: str | None, options: dict | None) -> Dataset:
    check_options(name, options, {})
    spec = SPECS[name]
    needed = spec["train"] + spec["test"]
    if root is None:
        raise UserError(f"dataset {name!r} needs --dataset-dir, a folder holding "
                        f"{spec['folder']}/ with {', '.join(needed)}")
    check_dataset_dir(name, root)
    places = [os.path.join(root, spec["folder"]), root]
    folder = next((p for p in places if all(os.path.isfile(os.path.join(p, f)) for f in needed)), None)
    if folder is None:
        raise UserError(f"dataset {name!r}: expected {', '.join(needed)} in one of: {', '.join(places)}")
    train_x, train_y = _read_batches([os.path.join(folder, f) for f in spec["train"]],
                                     spec["label_key"], spec["num_classes"])
    test_x, test_y = _read_batches([os.path.join(folder, f) for f in spec["test"]],
                                   spec["label_key"], spec["num_classes"])
    class_names = None
    meta_path = os.path.join(folder, spec["meta"])
    if os.path.isfile(meta_path):
        names = _unpickle(meta_path).get(spec["names_key"])
        if names is not None:
            class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return Dataset(name=name, num_classes=spec["num_classes"], sample_shape=(3, 32, 32),
                   train=ArraySplit(train_x, train_y), test=ArraySplit(test_x, test_y),
                   mean=spec["mean"], std=spec["std"], class_names=class_names)


def load_cifar10(root: str | None, options: dict | None = None) -> Dataset:
    return _load("cifar10", root, options)


def load_cifar100(root: str | None, options: dict | None = None) -> Dataset:
    return _load("cifar100", root, options)

"""MNIST and Fashion-MNIST from their IDX files (plain or ``.gz``).

Looked for in ``root`` and in torchvision's layout (``root/MNIST/raw``,
``root/FashionMNIST/raw``); the first folder holding all four files wins."""
import gzip
import os

import numpy as np

from common.errors import UserError

from .dataset import ArraySplit, Dataset, check_dataset_dir, check_options

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# IDX element types (third magic byte) -> big-endian numpy dtype.
IDX_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
             0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
STATS = {"mnist": ((0.1307,), (0.3081,)), "fashion_mnist": ((0.2860,), (0.3530,))}
SUBDIRS = {"mnist": os.path.join("MNIST", "raw"), "fashion_mnist": os.path.join("FashionMNIST", "raw")}
CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"],
}


def read_idx(path: str) -> np.ndarray:
    """One IDX file (``.gz`` or not) as a numpy array of the dtype and shape its header gives."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read IDX file {path}: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise UserError(f"{path} is not an IDX file: bad magic number {raw[:4].hex()}")
    dtype, ndim = IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise UserError(f"{path}: header says dims {dims} ({expected} bytes of data) "
                        f"but the file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def find_files(name: str, root: str | None) -> dict[str, str]:
    """Map each of FILES to an existing path (plain preferred over .gz) in the first folder having all."""
    if root is None:
        raise UserError(f"dataset {name!r} needs --dataset-dir, a folder holding "
                        f"{', '.join(FILES)} (each optionally .gz)")
    check_dataset_dir(name, root)
    places = [root, os.path.join(root, SUBDIRS[name])]
    for place in places:
        found = {}
        for fname in FILES:
            for candidate in (fname, fname + ".gz"):
                if os.path.isfile(os.path.join(place, candidate)):
                    found[fname] = os.path.join(place, candidate)
                    break
        if len(found) == len(FILES):
            return found
    raise UserError(f"dataset {name!r}: expected {', '.join(FILES)} (each optionally .gz) "
                    f"in one of: {', '.join(places)}")


def _images_and_labels(images_path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise UserError(f"{images_path}: expected uint8 images (n, rows, cols), "
                        f"got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise UserError(f"{labels_path}: expected {len(images)} labels, got shape {labels.shape}")
    labels = labels.astype(np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise UserError(f"{labels_path}: labels must be in 0..9, found {labels.min()}..{labels.max()}")
    return images[:, None, :, :], labels


def _load(name: str, root: str | None, options: dict | None) -> Dataset:
    check_options(name, options, {})
    files = find_files(name, root)
    train_x, train_y = _images_and_labels(files[FILES[0]], files[FILES[1]])
    test_x, test_y = _images_and_labels(files[FILES[2]], files[FILES[3]])
    if train_x.shape[1:] != test_x.shape[1:]:
        raise UserError(f"dataset {name!r}: train images are {train_x.shape[2:]} "
                        f"but test images are {test_x.shape[2:]}")
    mean, std = STATS[name]
    return Dataset(name=name, num_classes=10, sample_shape=tuple(train_x.shape[1:]),
                   train=ArraySplit(train_x, train_y), test=ArraySplit(test_x, test_y),
                   mean=mean, std=std, class_names=CLASS_NAMES[name])


def load_mnist(root: str | None, options: dict | None = None) -> Dataset:
    return _load("mnist", root, options)


def load_fashion_mnist(root: str | None, options: dict | None = None) -> Dataset:
    return _load("fashion_mnist", root, options)

"""The dataset record every loader returns, and the splits that hand out uint8 batches.

A split is a list of labelled samples that can hand out any batch of them by index:
``x, y = split.take(indices)`` gives a ``torch.uint8`` tensor ``(n, C, H, W)`` and a
``torch.int64`` tensor ``(n,)``. Samples stay uint8 as they arrive; the trainer
normalises them on the device with ``(x / 255 - mean) / std``. Splits are picklable,
so a DataLoader's worker processes can call ``take``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from common.errors import UserError
from common.options import merge_options


class Split:
    """Labelled samples addressed by index. Subclasses set ``targets`` and define ``take``."""

    targets: np.ndarray  # int64, one label per sample

    def __len__(self) -> int:
        return len(self.targets)

    def take(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(x uint8 (n, C, H, W), y int64 (n,))`` for the samples at ``indices``."""
        raise NotImplementedError


class ArraySplit(Split):
    """A split held in memory as one uint8 NCHW array; a batch is one vectorised gather."""

    def __init__(self, images: np.ndarray, targets: np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (n, C, H, W), got {images.dtype} {images.shape}")
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} labels")
        self.images = np.ascontiguousarray(images)
        self.targets = np.asarray(targets, dtype=np.int64)

    def take(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        idx = as_indices(indices)
        return torch.from_numpy(self.images[idx]), torch.from_numpy(self.targets[idx])


class FolderSplit(Split):
    """Image files decoded on demand with PIL: RGB, shorter side resized to ``size``, centre crop.

    Holds only paths and labels, so it pickles cheaply into DataLoader workers."""

    def __init__(self, paths: list[str], targets, size: int):
        if len(paths) != len(targets):
            raise ValueError(f"{len(paths)} paths but {len(targets)} labels")
        self.paths = list(paths)
        self.targets = np.asarray(targets, dtype=np.int64)
        self.size = int(size)

    def take(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        idx = as_indices(indices)
        x = np.empty((len(idx), 3, self.size, self.size), dtype=np.uint8)
        for row, i in enumerate(idx):
            x[row] = decode_image(self.paths[i], self.size)
        return torch.from_numpy(x), torch.from_numpy(self.targets[idx])


@dataclass
class Dataset:
    """A train and a test split with what a model and the normalisation need to know."""

    name: str
    num_classes: int
    sample_shape: tuple[int, int, int]  # (C, H, W)
    train: Split
    test: Split
    mean: tuple[float, ...]  # per channel, on the [0, 1] scale
    std: tuple[float, ...]
    class_names: list[str] | None = field(default=None, repr=False)


def as_indices(indices) -> np.ndarray:
    """Indices as a 1-D int64 numpy array (accepts lists, numpy arrays and torch tensors)."""
    if isinstance(indices, torch.Tensor):
        indices = indices.cpu().numpy()
    idx = np.asarray(indices, dtype=np.int64)
    if idx.ndim != 1:
        raise ValueError(f"indices must be 1-D, got shape {idx.shape}")
    return idx


def decode_image(path: str, size: int) -> np.ndarray:
    """One image file as uint8 (3, size, size): RGB, shorter side to ``size``, centre crop."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            if min(w, h) != size:
                scale = size / min(w, h)
                w, h = max(size, round(w * scale)), max(size, round(h * scale))
                img = img.resize((w, h), Image.BILINEAR)
            left, top = (w - size) // 2, (h - size) // 2
            img = img.crop((left, top, left + size, top + size))
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    except OSError as exc:
        raise UserError(f"cannot decode image {path}: {exc}") from exc


def check_options(dataset: str, options: dict | None, defaults: dict) -> dict:
    """``defaults`` updated with ``options``; UserError on a key the dataset does not take."""
    return merge_options(f"dataset {dataset!r}", options, defaults)


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[tuple, tuple]:
    """Per-channel mean and std of uint8 NCHW images on the [0, 1] scale, in chunks."""
    channels = images.shape[1]
    total, total_sq, count = np.zeros(channels), np.zeros(channels), 0
    for start in range(0, len(images), chunk):
        part = images[start:start + chunk].astype(np.float64) / 255.0
        total += part.sum(axis=(0, 2, 3))
        total_sq += (part ** 2).sum(axis=(0, 2, 3))
        count += part.shape[0] * part.shape[2] * part.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 1e-12))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def check_dataset_dir(name: str, root: str) -> None:
    """A --dataset-dir that is missing, not a folder, or unreadable, said as such (an unreadable
    folder would otherwise look like one without the expected files)."""
    import os

    if not os.path.exists(root):
        raise UserError(f"dataset {name!r}: --dataset-dir {root} does not exist")
    if not os.path.isdir(root):
        raise UserError(f"dataset {name!r}: --dataset-dir {root} is a file, not a folder")
    if not os.access(root, os.R_OK | os.X_OK):
        raise UserError(f"dataset {name!r}: --dataset-dir {root}: permission denied")

"""Checks of the data a run will read, made before anything is trained or written.

A task without test samples would be scored 0% and drag every average down; a class with
training samples but no test samples (a class folder missing from val/) would leave its task
scored on the other classes only (a perfect score on three images of one class), and one with
test samples but no training samples would be scored without ever being taught; a corrupt image
deep inside an image folder would otherwise surface hours into a run, after checkpoints, and
inside a DataLoader worker's traceback. All are found up front and named.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from common.errors import UserError

from .dataset import FolderSplit

VERIFY_MODES = ("decode", "open", "off")


def check_tasks(dataset, tasks) -> None:
    """Every class of the dataset has training and test samples, and every task has training
    and test samples of the same classes."""
    train_classes = set(np.unique(dataset.train.targets).tolist())
    test_classes = set(np.unique(dataset.test.targets).tolist())
    for label in sorted(train_classes ^ test_classes):
        has, lacks = ("training", "test") if label in train_classes else ("test", "training")
        raise UserError(f"{class_name(dataset, label)} has {has} samples but no {lacks} samples in dataset "
                        f"{dataset.name!r}; every class needs both (its task would be scored without it, or "
                        f"on it untaught): give {lacks} samples of it, or leave the class out")
    for task in tasks:
        classes = ", ".join(map(str, task.classes[:8])) + (" ..." if len(task.classes) > 8 else "")
        for kind, indices in (("training", task.train_indices), ("test", task.test_indices)):
            if len(indices) == 0:
                raise UserError(f"task {task.index + 1} (classes {classes}) has no {kind} samples in "
                                f"dataset {dataset.name!r}; its accuracy would mean nothing: give data "
                                f"with {kind} samples of every class, or change --tasksets-config")
        tested = set(np.unique(dataset.test.targets[task.test_indices]).tolist())
        for label in sorted(set(task.classes) ^ tested):
            has, lacks = ("training", "test") if label in task.classes else ("test", "training")
            raise UserError(f"task {task.index + 1} has {has} samples of {class_name(dataset, label)} but no "
                            f"{lacks} samples of it in dataset {dataset.name!r}; give more {lacks} samples of it, "
                            f"or change --tasksets-config (fewer tasks)")


def class_name(dataset, label: int) -> str:
    """'class 3' or, where the dataset names its classes, "class 'n01443537' (label 3)"."""
    names = dataset.class_names
    if names and 0 <= label < len(names) and names[label] != str(label):
        return f"class {names[label]!r} (label {label})"
    return f"class {label}"


def _problem(path: str, mode: str) -> str | None:
    """Why PIL cannot read `path`, or None. 'decode' decodes JPEGs at 1/8 scale (DCT scaling: a
    fraction of a full decode, but a truncated or corrupt file still fails)."""
    try:
        with Image.open(path) as img:
            if mode == "decode":
                img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
                img.load()
            else:
                img.verify()
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for damaged files
        return f"{path}: {type(exc).__name__}: {exc}"
    return None


def unreadable_images(dataset, part: int, parts: int, mode: str, threads: int = 1) -> list[str]:
    """Problems with the image files of `dataset` in share `part` of `parts` (each rank checks its
    own share; PIL releases the GIL while decoding, so threads help)."""
    if mode == "off":
        return []
    paths = [p for split in (dataset.train, dataset.test) if isinstance(split, FolderSplit)
             for p in split.paths]
    mine = paths[part::parts]
    if not mine:
        return []
    with ThreadPoolExecutor(max(1, threads)) as pool:
        return [p for p in pool.map(lambda path: _problem(path, mode), mine, chunksize=64) if p]

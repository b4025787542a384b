"""Checks of the data a run will read, made before anything is trained or written.

A task without test samples would be scored 0% and drag every average down; a corrupt image
deep inside an image folder would otherwise surface hours into a run, after checkpoints, and
inside a DataLoader worker's traceback. Both are found up front and named.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from common.errors import UserError

from .dataset import FolderSplit

VERIFY_MODES = ("decode", "open", "off")


def check_tasks(dataset, tasks) -> None:
    """Every task has training and test samples."""
    for task in tasks:
        classes = ", ".join(map(str, task.classes[:8])) + (" ..." if len(task.classes) > 8 else "")
        for kind, indices in (("training", task.train_indices), ("test", task.test_indices)):
            if len(indices) == 0:
                raise UserError(f"task {task.index + 1} (classes {classes}) has no {kind} samples in "
                                f"dataset {dataset.name!r}; its accuracy would mean nothing: give data "
                                f"with {kind} samples of every class, or change --tasksets-config")


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

"""Ranks agree on what they were given before they train together.

Every rank of a job must train the same experiment on the same data: a rank launched with
another seed, agent or dataset folder would otherwise hang the job in a mismatched collective
or, worse, finish with numbers that mix different experiments. Each rank's resolved
configuration and a fingerprint of its data (per task: sample counts and a checksum of the
labels) are gathered; any difference ends the job on every rank with one line naming the
ranks and the field.
"""
from __future__ import annotations

import json
import logging
import zlib

import numpy as np

from common.errors import AgreedError
from common.rank_groups import by_rank

log = logging.getLogger(__name__)


def canonical(value) -> str:
    """One text per value, so equal options compare equal whatever their container types."""
    return json.dumps(value, sort_keys=True, default=str)


def _checksum(array: np.ndarray) -> str:
    return f"{zlib.crc32(np.ascontiguousarray(array, dtype=np.int64).tobytes()):08x}"


def data_fingerprint(dataset, tasks) -> dict:
    """What must be equal on every rank about the data: shapes, classes and each task's samples."""
    fields = {"dataset classes": dataset.num_classes, "sample shape": list(dataset.sample_shape),
              "train samples": len(dataset.train), "test samples": len(dataset.test),
              "tasks": len(tasks)}
    train_y, test_y = np.asarray(dataset.train.targets), np.asarray(dataset.test.targets)
    for task in tasks:
        t = task.index + 1
        fields[f"task {t} training samples"] = len(task.train_indices)
        fields[f"task {t} training labels (crc32)"] = _checksum(train_y[task.train_indices])
        fields[f"task {t} test samples"] = len(task.test_indices)
        fields[f"task {t} test labels (crc32)"] = _checksum(test_y[task.test_indices])
    return fields


def check_options_early(cfg: dict) -> None:
    """Before any engine starts (ranks that disagree on --backend could not even meet in one):
    compare the options over MPI when MPI connects the ranks; other launchers check later."""
    from trainer import mpi
    from trainer.launch import detect

    launch = detect()
    if launch.has_mpi and launch.world_size > 1:
        _compare(mpi.world().allgather(cfg), "options", cfg)


def check(engine, what: str, fields: dict) -> None:
    """Collective: raise AgreedError on every rank if any field differs between ranks."""
    _compare(engine.allgather_object(fields), what, fields)


def _compare(gathered: list, what: str, fields: dict) -> None:
    problems = []
    for name in fields:
        values = [canonical(g.get(name)) for g in gathered]
        if len(set(values)) > 1:
            problems.append(f"{name} differs ({'; '.join(by_rank(values))})")
    if problems:
        raise AgreedError(f"the ranks disagree on their {what}: {', '.join(problems[:3])}"
                          f"{' and more' if len(problems) > 3 else ''}; launch every rank with the same "
                          f"options and data")
    log.debug("all %d ranks agree on their %s", len(gathered), what)

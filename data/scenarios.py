"""Continual scenarios: which training and test samples make up each task.

Built with ``continuum`` over sample *indices*: an ``InMemoryDataset`` whose x is
``arange(n)`` (``TaskType.TENSOR``), so each continuum ``TaskSet._x`` is the list of
indices of that task into ``dataset.train``. Labels are never remapped: a sample keeps
its dataset label whatever the class order.

Config keys (defaults in ``DEFAULT_SCENARIO``; keys that do not apply to the chosen
scenario are checked but ignored):

- ``scenario``: ``class`` (new classes per task), ``domain`` / ``instance`` (the same
  here: every class in every task, new samples), or ``joint`` (one task with everything).
- ``initial_increment`` (class): classes in the first task; 0 means ``increment``.
- ``increment`` (class): classes in each later task.
- ``class_order`` (class): a permutation of the labels, ``"random"`` (seeded), or null
  (0, 1, 2, ...).
- ``num_tasks`` (domain/instance): each class's samples are shuffled (seeded) and cut
  into ``num_tasks`` parts whose sizes differ by at most one; the test split likewise.
- ``concatenate_tasksets``: task i trains on the union of tasks 0..i. Only the training
  side is concatenated: task i is still evaluated on its own test samples.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from continuum.datasets import InMemoryDataset
from continuum.scenarios import ClassIncremental, InstanceIncremental
from continuum.tasks import TaskType

from common.errors import UserError

from .dataset import Dataset

DEFAULT_SCENARIO = {"scenario": "class", "initial_increment": 2, "increment": 2,
                    "num_tasks": 5, "class_order": None, "concatenate_tasksets": False}
SCENARIOS = ("class", "domain", "instance", "joint")


@dataclass
class Task:
    index: int
    classes: list[int]         # sorted labels of this task's own samples
    train_indices: np.ndarray  # int64 into dataset.train (the union of tasks 0..i if concatenated)
    test_indices: np.ndarray   # int64 into dataset.test, this task's own part only


def build_tasks(dataset: Dataset, config: dict | None = None, seed: int = 0) -> list[Task]:
    """Cut ``dataset`` into continual tasks as ``config`` says (see the module docstring).

    >>> tasks = build_tasks(load_dataset("digits"), {"initial_increment": 4, "increment": 3})
    >>> [t.classes for t in tasks]
    [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    """
    cfg = _check_config(config)
    kind = cfg["scenario"]
    if kind == "class":
        parts = _class_tasks(dataset, cfg, seed)
    elif kind == "joint":
        parts = [(np.arange(len(dataset.train), dtype=np.int64),
                  np.arange(len(dataset.test), dtype=np.int64))]
    else:
        parts = _domain_tasks(dataset, cfg["num_tasks"], seed)

    tasks, seen = [], []
    for i, (train_idx, test_idx) in enumerate(parts):
        seen.append(train_idx)
        classes = sorted(int(c) for c in np.unique(dataset.train.targets[train_idx]))
        if cfg["concatenate_tasksets"]:
            train_idx = np.sort(np.concatenate(seen))
        tasks.append(Task(index=i, classes=classes, train_indices=train_idx.astype(np.int64),
                          test_indices=test_idx.astype(np.int64)))
    return tasks


def _check_config(config: dict | None) -> dict:
    config = dict(config or {})
    unknown = sorted(set(config) - set(DEFAULT_SCENARIO))
    if unknown:
        raise UserError(f"unknown scenario key(s) {', '.join(unknown)}; "
                        f"valid keys: {', '.join(DEFAULT_SCENARIO)}")
    cfg = {**DEFAULT_SCENARIO, **config}
    if cfg["scenario"] not in SCENARIOS:
        raise UserError(f"unknown scenario {cfg['scenario']!r}; valid scenarios: {', '.join(SCENARIOS)}")
    for key, minimum in (("initial_increment", 0), ("increment", 1), ("num_tasks", 1)):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise UserError(f"scenario key {key} must be an integer >= {minimum}, got {value!r}")
    if not isinstance(cfg["concatenate_tasksets"], bool):
        raise UserError(f"scenario key concatenate_tasksets must be true or false, "
                        f"got {cfg['concatenate_tasksets']!r}")
    order = cfg["class_order"]
    if not (order is None or order == "random" or isinstance(order, (list, tuple))):
        raise UserError(f"scenario key class_order must be a list of labels, 'random' or null, got {order!r}")
    return cfg


def _class_order(order, num_classes: int, seed: int) -> list[int]:
    if order is None:
        return list(range(num_classes))
    if order == "random":
        return [int(c) for c in np.random.default_rng([seed, 3]).permutation(num_classes)]
    if (not all(isinstance(c, int) and not isinstance(c, bool) for c in order)
            or sorted(order) != list(range(num_classes))):
        raise UserError(f"class_order must be a permutation of 0..{num_classes - 1}, got {list(order)}")
    return list(order)


def _class_tasks(dataset: Dataset, cfg: dict, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    k = dataset.num_classes
    order = _class_order(cfg["class_order"], k, seed)
    increment = cfg["increment"]
    initial = cfg["initial_increment"] or increment
    if initial > k or (k - initial) % increment:
        raise UserError(f"class scenario: initial_increment {initial} and increment {increment} "
                        f"do not split {k} classes into whole tasks (need initial_increment <= {k} "
                        f"and {k} - initial_increment divisible by increment)")
    increments = [initial] + [increment] * ((k - initial) // increment)
    targets = dataset.train.targets
    absent = sorted(set(range(k)) - set(np.unique(targets).tolist()))
    if absent:
        raise UserError(f"class scenario: classes {absent} have no training samples in {dataset.name!r}")

    indices = InMemoryDataset(x=np.arange(len(targets)), y=targets, data_type=TaskType.TENSOR)
    scenario = ClassIncremental(indices, increment=increments, class_order=order)
    parts, start = [], 0
    for task_set, size in zip(scenario, increments):
        classes = order[start:start + size]
        start += size
        test_idx = np.flatnonzero(np.isin(dataset.test.targets, classes))
        parts.append((np.asarray(task_set._x, dtype=np.int64), test_idx))
    return parts


def _equal_parts(targets: np.ndarray, num_tasks: int, rng: np.random.Generator) -> np.ndarray:
    """Task id per sample: each class's samples shuffled and cut into num_tasks equal-ish parts."""
    t = np.zeros(len(targets), dtype=np.int64)
    for c in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == c))
        t[members] = np.arange(len(members)) * num_tasks // len(members)
    return t


def _domain_tasks(dataset: Dataset, num_tasks: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    train_t = _equal_parts(dataset.train.targets, num_tasks, np.random.default_rng([seed, 1]))
    test_t = _equal_parts(dataset.test.targets, num_tasks, np.random.default_rng([seed, 2]))
    for split, t in (("training", train_t), ("test", test_t)):
        counts = np.bincount(t, minlength=num_tasks)
        if counts.min() == 0:
            raise UserError(f"domain scenario: num_tasks={num_tasks} leaves task {int(counts.argmin())} "
                            f"without {split} samples; use fewer tasks")
    targets = dataset.train.targets
    indices = InMemoryDataset(x=np.arange(len(targets)), y=targets, t=train_t, data_type=TaskType.TENSOR)
    scenario = InstanceIncremental(indices)
    return [(np.asarray(task_set._x, dtype=np.int64), np.flatnonzero(test_t == i))
            for i, task_set in enumerate(scenario)]

"""Checkpoints that a killed job resumes from with nothing lost.

One checkpoint is a folder `checkpoints/t{task:03d}-e{epoch:04d}/` holding
  shared.pt    (rank 0) model, optimizer, LR schedule, progress, metrics so far, config
  rank{r}.pt   (every rank) RNG states, the agent's state (its buffer slice), step records
  COMPLETE     written by rank 0 after every rank's file is on disk
Each file is written to a temporary name, flushed to disk and renamed, so a crash mid-write
leaves a folder without COMPLETE, which resuming ignores (the previous checkpoint is used).
`epoch` counts epochs finished inside the task; the last checkpoint of a task is its end.
"""
from __future__ import annotations

import logging
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from trainer.errors import UserError

log = logging.getLogger(__name__)
_NAME = re.compile(r"^t(\d{3})-e(\d{4})$")
KEEP = 2  # complete checkpoints kept; older ones are removed


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save(run_dir: Path, engine, task: int, epoch: int, shared: dict, per_rank: dict) -> Path:
    """Collective: every rank writes its file; rank 0 marks the checkpoint complete."""
    folder = checkpoint_dir(run_dir) / f"t{task:03d}-e{epoch:04d}"
    if engine.rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "COMPLETE").unlink(missing_ok=True)
    engine.barrier()
    _atomic_save({**per_rank, "rng": rng_state()}, folder / f"rank{engine.rank}.pt")
    if engine.rank == 0:
        _atomic_save({**shared, "world_size": engine.world_size, "task": task, "epoch": epoch},
                     folder / "shared.pt")
    engine.barrier()
    if engine.rank == 0:
        (folder / "COMPLETE").write_text(f"{engine.world_size}\n")
        for old in complete_checkpoints(run_dir)[:-KEEP]:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def complete_checkpoints(run_dir: Path) -> list[Path]:
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and (p / "COMPLETE").is_file()]
    return sorted(found, key=lambda p: p.name)


def latest(run_dir: Path) -> Path | None:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def load(folder: Path, engine) -> tuple[dict, dict]:
    """(shared, this rank's) state of a complete checkpoint; a different world size is refused."""
    shared = torch.load(folder / "shared.pt", map_location="cpu", weights_only=False)
    if shared["world_size"] != engine.world_size:
        raise UserError(f"checkpoint {folder} was written by {shared['world_size']} ranks, this job has "
                        f"{engine.world_size}; resume with the same number of ranks")
    own = torch.load(folder / f"rank{engine.rank}.pt", map_location="cpu", weights_only=False)
    return shared, own

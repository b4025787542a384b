"""Checkpoints that a killed job resumes from with nothing lost.

One checkpoint is a folder `checkpoints/t{task:03d}-e{epoch:04d}/` holding
  shared.pt    (rank 0) model, optimizer, LR schedule, progress, metrics so far, config
  rank{r}.pt   (every rank) RNG states, the agent's state (its buffer slice), step records
  COMPLETE     written by rank 0 after every rank's file is on disk
Each file is written to a temporary name, flushed to disk and renamed, so a crash mid-write
leaves a folder without COMPLETE, which resuming ignores (the previous checkpoint is used).
`epoch` counts epochs finished inside the task; the last checkpoint of a task is its end.

Every file knows whose it is: its `identity` names the run (the run id of run.json), the
checkpoint (its folder's name), the world size and (rank files) the rank that wrote it. A file
copied in from another run, another checkpoint or another rank does not match its folder and is
treated like a damaged one ("rank1.pt belongs to run X / checkpoint t003-e0001"): the previous
checkpoint is used, never a mix of two.
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

from common.errors import AgreedError

log = logging.getLogger(__name__)
_NAME = re.compile(r"^t(\d{3,})-e(\d{4,})$")
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


def identity(run_id: str, folder: Path, world_size: int, rank: int | None) -> dict:
    """What a checkpoint file says about itself (rank None: shared.pt)."""
    return {"run": run_id, "checkpoint": folder.name, "world_size": world_size, "rank": rank}


def save(run_dir: Path, run_id: str, engine, task: int, epoch: int, shared: dict, per_rank: dict) -> Path:
    """Collective: every rank writes its file; rank 0 marks the checkpoint complete."""
    folder = checkpoint_dir(run_dir) / f"t{task:03d}-e{epoch:04d}"
    if engine.rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "COMPLETE").unlink(missing_ok=True)
    engine.barrier()
    world = engine.world_size
    _atomic_save({**per_rank, "rng": rng_state(), "identity": identity(run_id, folder, world, engine.rank)},
                 folder / f"rank{engine.rank}.pt")
    if engine.rank == 0:
        _atomic_save({**shared, "world_size": world, "task": task, "epoch": epoch,
                      "identity": identity(run_id, folder, world, None)}, folder / "shared.pt")
    engine.barrier()
    if engine.rank == 0:
        (folder / "COMPLETE").write_text(f"{engine.world_size}\n")
        for old in complete_checkpoints(run_dir)[:-KEEP]:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def _order(folder: Path) -> tuple[int, int]:
    task, epoch = _NAME.match(folder.name).groups()
    return int(task), int(epoch)


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first, ordered by (task, epoch) as numbers."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and (p / "COMPLETE").is_file()]
    return sorted(found, key=_order)


def latest(run_dir: Path) -> Path | None:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


SHARED_KEYS = ("model", "optimizer", "scheduler", "world_size", "task", "epoch", "identity")
RANK_KEYS = ("agent", "recorder", "rng", "identity")


def _describe(ident: dict) -> str:
    who = f"rank {ident.get('rank')} of {ident.get('world_size')}" if ident.get("rank") is not None \
        else f"{ident.get('world_size')} rank(s)"
    return f"run {ident.get('run')} / checkpoint {ident.get('checkpoint')} / {who}"


def _belongs(path: Path, state: dict, run_id: str, world_size: int, rank: int | None) -> None:
    """A ValueError unless the file's identity is this run's, this folder's and this rank's."""
    found, wanted = state["identity"], identity(run_id, path.parent, world_size, rank)
    if found == wanted:
        return
    got = _describe(found) if isinstance(found, dict) else repr(found)
    raise ValueError(f"{path.name} belongs to {got}, not to {_describe(wanted)} (a file copied in from "
                     f"elsewhere?)")


def _read(path: Path, keys: tuple) -> dict:
    """One checkpoint file; any failure to load it (truncated, garbage, empty) is a ValueError.
    A file without an identity was written by another program or an older version of this one."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - a damaged pickle can raise nearly anything
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ValueError(f"{path} does not load ({type(exc).__name__}: {first})") from None
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing == ["identity"]:
        raise ValueError(f"{path} carries no identity (written by an older version of this trainer, or not "
                         f"by it): it cannot be told apart from another run's file")
    if missing:
        raise ValueError(f"{path} is damaged (missing {', '.join(missing)})")
    return state


def load(folder: Path, engine, run_id: str | None = None) -> tuple[dict, dict]:
    """(shared, this rank's) state of a complete checkpoint. Written by another number of ranks
    (elastic resume), this rank's state is pooled from every old rank's file: `resharded_from`
    (the old world size), `agent` = {"reshard": [every old rank's agent state]}, and the step
    records and RNG state of old rank `rank` (or `rank mod old` for the RNG on a new rank)."""
    shared = _read(folder / "shared.pt", SHARED_KEYS)
    if run_id is None:  # a run folder whose run.json names no run: its files must agree among themselves
        run_id = shared["identity"].get("run") if isinstance(shared["identity"], dict) else None
    old = shared["world_size"]
    _belongs(folder / "shared.pt", shared, run_id, old, None)
    marked = (folder / "COMPLETE").read_text().strip()
    if marked != str(old):
        raise ValueError(f"{folder / 'shared.pt'} was written by {old} rank(s), but the checkpoint's COMPLETE "
                         f"mark says {marked!r}")
    if old != engine.world_size:
        files = [_read(folder / f"rank{r}.pt", RANK_KEYS) for r in range(old)]
        for r, state in enumerate(files):
            _belongs(folder / f"rank{r}.pt", state, run_id, old, r)
        mine = files[engine.rank] if engine.rank < old else files[engine.rank % old]
        recorder = dict(mine["recorder"], steps=mine["recorder"]["steps"] if engine.rank < old else [])
        return shared, {"agent": {"reshard": [f["agent"] for f in files]}, "recorder": recorder,
                        "rng": mine["rng"], "resharded_from": old}
    own = _read(folder / f"rank{engine.rank}.pt", RANK_KEYS)
    _belongs(folder / f"rank{engine.rank}.pt", own, run_id, old, engine.rank)
    return shared, own


def load_usable(folders: list[Path], engine, run_id: str | None = None,
                check_shared=None) -> tuple[Path, dict, dict, list[str]]:
    """The newest checkpoint of `folders` (newest first) that loads on every rank, belongs to run
    `run_id` and passes `check_shared(shared)` (a ValueError: unusable), and a note for each one
    skipped. Collective: every rank takes the same decision, from the gathered outcomes of all
    ranks; a damaged or foreign file is named, and the next older checkpoint is tried."""
    notes = []
    for folder in folders:
        try:
            shared, own = load(folder, engine, run_id)
            if check_shared is not None:
                check_shared(shared)
            problem = None
        except ValueError as exc:
            shared = own = None
            problem = str(exc)
        problems = [p for p in engine.allgather_object(problem) if p]
        if not problems:
            return folder, shared, own, notes
        notes.append(f"checkpoint {folder} is unusable: {'; '.join(problems)}; trying the previous one")
    raise AgreedError(f"no usable checkpoint to resume from: {' | '.join(notes) or 'none found'}; start "
                      f"afresh without --resume")

"""Owning a run's results folder: created or taken over atomically, locked while the run lives.

Rank 0 holds an exclusive `flock` on `run.lock` for the life of the process (the kernel drops
it when the process dies, so a killed run's folder can be resumed at once), which stops two
live runs from sharing a folder. `run.json` records the run's identity (a run id drawn when the
run starts, which every checkpoint file carries; the fingerprint of its experiment
configuration; its world size) and its status: running, finished or diverged.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path

from common.errors import UserError

LOCK_FILE = "run.lock"
RUN_FILE = "run.json"
_held: dict = {}  # run folder -> its open, locked lock file


def generated_name(cfg: dict) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{cfg['agent']}-{cfg['dataset']}-s{cfg['seed']}"


def _lock(folder: Path) -> None:
    path = folder / LOCK_FILE
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        error = _in_use(folder, handle)
        handle.close()
        raise error from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    handle.flush()
    _held[folder.resolve()] = handle


def release(folder: Path) -> None:
    """Let go of the folder's lock (a process that ends lets go of it anyway)."""
    handle = _held.pop(Path(folder).resolve(), None)
    if handle is not None:
        handle.close()


def _in_use(folder: Path, lock_file) -> UserError:
    owner = lock_file.read().strip() or "another process"
    return UserError(f"{folder} is in use by a live run ({owner}); wait for it to end, or choose "
                     f"another --run-name")


def record(run_dir: Path) -> dict:
    """run.json's contents ({} when missing or unreadable)."""
    try:
        found = json.loads((run_dir / RUN_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


ENDED = ("finished", "diverged")  # statuses of a run that no launch continues


def status(run_dir: Path) -> str | None:
    """run.json's status: running, finished, diverged (None: no readable run.json)."""
    return record(run_dir).get("status")


def new_run_id() -> str:
    """A run's id: drawn once when the run starts, kept by every resume of it."""
    return uuid.uuid4().hex[:12]


def check_not_in_use(folder: Path) -> None:
    """Refuse a folder that a live run holds (reads only: the lock is tried, then let go)."""
    try:
        handle = open(folder / LOCK_FILE)
    except OSError:
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            raise _in_use(folder, handle) from None
        fcntl.flock(handle, fcntl.LOCK_UN)


def _clear(folder: Path) -> None:
    """Everything but the lock: a replaced or restarted run keeps nothing of the old one."""
    for entry in folder.iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def claim(action: str, run_dir: Path | None, cfg: dict, overwrite: bool) -> Path:
    """Create (new run) or take over (resume, restart) the run folder and lock it. Rank 0 only."""
    try:
        if run_dir is None:  # a generated name: never an existing folder
            base = Path(cfg["results_dir"]) / generated_name(cfg)
            run_dir, n = base, 1
            base.parent.mkdir(parents=True, exist_ok=True)
            while True:
                try:
                    run_dir.mkdir()
                    break
                except FileExistsError:
                    n += 1
                    run_dir = base.with_name(f"{base.name}-{n}")
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
        _lock(run_dir)
        holds_run = any(p.name != LOCK_FILE for p in run_dir.iterdir())
        if action == "new" and holds_run:
            if not overwrite:
                raise UserError(f"{run_dir} already holds a run; pass --resume to continue it, --overwrite "
                                f"to replace it, or choose another --run-name")
            _clear(run_dir)
        elif action == "restart":
            _clear(run_dir)
    except PermissionError as exc:
        raise UserError(f"cannot create the results folder {run_dir}: permission denied "
                        f"({exc.filename})") from None
    except OSError as exc:
        raise UserError(f"cannot create the results folder {run_dir}: {exc.strerror or exc}") from None
    return run_dir


def write_identity(run_dir: Path, run_id: str, fingerprint: str, world_size: int, status: str,
                   **extra) -> None:
    """run.json: who this run is, and whether it is running, finished or diverged (`extra`: where)."""
    path = run_dir / RUN_FILE
    found = record(run_dir)
    found.update(run_id=run_id, fingerprint=fingerprint, world_size=world_size, status=status,
                 updated=time.strftime("%Y-%m-%d %H:%M:%S"), **extra)
    if status == "running":
        found["launches"] = found.get("launches", 0) + 1
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(found, indent=2) + "\n")
    os.replace(tmp, path)

"""The study's journal file (Optuna's JournalFileBackend): checked line by line before a worker
joins, and repaired on request.

Optuna replays the journal, one JSON record a line, every time it opens it; a damaged line (a
write cut short by a full disk or a killed node, a stray edit) stops that replay with a
traceback (`JSONDecodeError`, `UnicodeDecodeError`, `AssertionError: Should not reach.`), or,
worse, a cut-short last line silently glues itself to the next worker's record. So every
worker replays the file here first, record by record, under the journal's own lock (no write is
half-done while it reads), and a damaged journal is refused in one line that names the line.

A repair keeps the records before the first damaged line and drops that line and all after it:
the journal numbers trials by the order of their creation records, and a damaged line may have
been one, so a later record could be applied to the wrong trial if it were kept.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError


@dataclass(frozen=True)
class Damage:
    line: int  # 1-based
    reason: str
    total: int  # lines in the file


@contextmanager
def _locked(path: Path):
    """The lock Optuna's JournalFileBackend takes for every append (the same file)."""
    from optuna.storages.journal import JournalFileSymlinkLock

    lock = JournalFileSymlinkLock(str(path))
    try:
        lock.acquire()
    except OSError as exc:
        raise UserError(f"cannot lock the study's journal {path}: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        lock.release()


def _replay_errors():
    from optuna.exceptions import OptunaError

    return (AssertionError, AttributeError, IndexError, KeyError, TypeError, ValueError, OptunaError)


def _lines(data: bytes) -> list[bytes]:
    """The file's lines as Optuna reads them (split at b"\\n" only), each with its end of line."""
    parts = data.split(b"\n")
    return [p + b"\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def replay(data: bytes):
    """(Optuna's replay of the records, the first Damage or None) of a journal's bytes."""
    from optuna.storages.journal._storage import JournalOperation, JournalStorageReplayResult

    result = JournalStorageReplayResult("hpo.py-check-")
    lines = _lines(data)
    for number, raw in enumerate(lines, start=1):
        if not raw.endswith(b"\n"):
            return result, Damage(number, "a record cut short (no end of line)", len(lines))
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            return result, Damage(number, "not UTF-8 text", len(lines))
        except ValueError:
            return result, Damage(number, "not a JSON record", len(lines))
        if not isinstance(record, dict) or not isinstance(record.get("op_code"), int):
            return result, Damage(number, "not an Optuna journal record (no op_code)", len(lines))
        if record["op_code"] not in set(JournalOperation):
            return result, Damage(number, f"an unknown operation (op_code {record['op_code']})", len(lines))
        try:
            result.apply_logs([record])
        except _replay_errors() as exc:
            what = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
            return result, Damage(number, f"a record Optuna cannot apply ({what})", len(lines))
    return result, None


def check(path: Path):
    """Optuna's replay of an intact journal (None if there is none yet); a damaged one is one
    UserError naming its first damaged line."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    with _locked(path):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UserError(f"cannot read the study's journal {path}: {exc.strerror or exc}") from None
    result, damage = replay(data)
    if damage is not None:
        after = damage.total - damage.line
        raise UserError(f"the study's journal {path} is damaged at line {damage.line} of {damage.total} "
                        f"({damage.reason}); the study cannot continue on it: stop its workers and run again with "
                        f"--repair, which drops line {damage.line}" + (f" and the {after} after it" if after else "")
                        + " and keeps a copy of the journal")
    return result


def repair(path: Path) -> str | None:
    """Truncate the journal before its first damaged line, keeping the original beside it;
    returns what was done (None: nothing was damaged). Call with no worker running."""
    if not path.exists():
        return None
    with _locked(path):
        data = path.read_bytes()
        _, damage = replay(data)
        if damage is None:
            return None
        backup = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.copy2(path, backup)
        kept = b"".join(_lines(data)[:damage.line - 1])
        tmp = path.with_name(f".{path.name}.repair-{os.getpid()}")
        tmp.write_bytes(kept)
        os.replace(tmp, path)
    dropped = f"line {damage.line}" if damage.line == damage.total else f"lines {damage.line}-{damage.total}"
    return (f"repaired the journal {path}: dropped {dropped} of {damage.total} (line {damage.line}: {damage.reason}); "
            f"the original is kept as {backup}")

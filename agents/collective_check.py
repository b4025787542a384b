"""CallCheck: the ranks of an own-loop rehearsal memory agree on each collective call before they
make it, so ranks that call different things raise together, naming the calls, instead of hanging.

A collective call that one rank makes and another does not (a different buffer kind, one
next_batch too many, close() on one rank and a draw on the other) used to wait forever inside
the buffer's collectives. Before each one, every rank now allgathers a small record: the call's
sequence number, which call it is, how many of that call the rank has made, and a digest of
its key arguments. Equal records: the call goes ahead. Different ones: every rank raises
AgreedError with the same line ("rank 0 called close #1 while rank 1 called next_batch #4").

The records travel over a communicator of their own (an MPI duplicate of COMM_WORLD, or a gloo
group under torch.distributed), never the one the training or the buffer use, so a record is
never matched with someone else's collective. Waits have a deadline (``timeout_s``): a rank that
does not arrive (blocked in another collective, or working alone for longer) makes the waiting
ones raise, naming the call they waited at and the last call all ranks agreed on.

A rank that leaves with its memory still open announces it from an atexit hook: matched with
the others' close() (or their own exits), the memory is closed collectively; matched with a
draw, every rank reports the mismatch and ends with status 1. (Under torchrun a rank that dies
of an exception does not announce: the launcher ends the others at once.) What can still wait
for ``timeout_s``: a rank stuck outside the memory's calls, or killed without its atexit hooks
under a launcher that does not end the job (mpirun ends it).

Cost: one non-blocking allgather of 5 int64 per checked call, about as long as a blocking one:
6-23 us on 2 ranks of a shared 2-core machine, +11 to +34 us per next_batch + insert step
(``tests/mpi_jobs/own_loop_calls.py cost``).
"""
from __future__ import annotations

import atexit
import os
import pickle
import sys
import time
import zlib
from collections import Counter

import numpy as np

from common.errors import AgreedError, UserError
from common.rank_groups import by_rank

PREFIX = "rehearsal memory: "
CALLS = ("rehearsal_memory", "next_batch", "insert", "offer_task", "refresh_task_extras", "send_extras", "stats",
         "close")
COLLECTIVE = ", ".join(CALLS[1:-1]) + " and close"
SEQ, CALL, COUNT, DIGEST, EXITING = range(5)  # the record's fields; EXITING is not compared
SPIN_S, YIELD_S = 2e-4, 2e-3  # how a check waits for the others (MpiTransport._wait)


class NoAnswer(Exception):
    """The other ranks did not complete a check in time (or their connection was lost)."""


class MpiTransport:
    """Records over an MPI duplicate of ``comm``, with non-blocking collectives polled up to a
    deadline (MPI has no timed wait)."""

    ends_job_on_failure = False  # under mpirun a rank that leaves waits in MPI_Finalize for the others

    def __init__(self, comm, timeout_s: float | None):
        self.timeout_s = timeout_s
        self.comm, self._dup = comm.Idup()  # collective: completed with the first check, within its deadline
        self.size = comm.Get_size()  # the duplicate is not usable until then

    def _wait(self, request) -> None:
        """Test until done: spinning for SPIN_S (the others are usually a moment away, and each
        Test moves the collective on), then yielding the core, then sleeping up to 1 ms."""
        start, pause = time.monotonic(), 0.0
        while not request.Test():
            waited = time.monotonic() - start
            if waited < SPIN_S:
                continue
            if self.timeout_s is not None and waited > self.timeout_s:
                raise NoAnswer("no answer")
            if waited > YIELD_S:
                pause = min(2 * pause or 5e-5, 1e-3)
            time.sleep(pause)

    def allgather(self, record: np.ndarray) -> np.ndarray:
        if self._dup is not None:
            self._wait(self._dup)
            self._dup = None
        out = np.empty((self.size, len(record)), dtype=np.int64)
        self._wait(self.comm.Iallgather(record, out))  # record and out stay referenced until done
        return out

    def allgather_object(self, obj) -> list:
        from mpi4py import MPI

        payload = np.frombuffer(pickle.dumps(obj), dtype=np.uint8)
        lengths = np.empty(self.size, dtype=np.int64)
        self._wait(self.comm.Iallgather(np.array([len(payload)], dtype=np.int64), lengths))
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        out = np.empty(int(lengths.sum()), dtype=np.uint8)
        self._wait(self.comm.Iallgatherv(payload, [out, (lengths, offsets), MPI.BYTE]))
        return [pickle.loads(out[o:o + n].tobytes()) for o, n in zip(offsets, lengths)]

    def free(self) -> None:
        self.comm.Free()

    def end(self, code: int, answered: bool) -> None:
        """Leave now. The others answered (they raise too): finalize with them, then exit with
        `code`. They did not: MPI_Abort, since MPI_Finalize would wait for them forever."""
        from mpi4py import MPI

        _flush()
        if not answered:
            MPI.COMM_WORLD.Abort(code)
        if not MPI.Is_finalized():
            MPI.Finalize()
        os._exit(code)


class TorchTransport:
    """Records over a gloo group of their own; gloo's own timeout is the deadline."""

    ends_job_on_failure = True  # torchrun's agent ends every process when one fails

    def __init__(self, timeout_s: float | None):
        from datetime import timedelta

        import torch.distributed as dist

        self.dist = dist
        kwargs = {} if timeout_s is None else {"timeout": timedelta(seconds=timeout_s)}
        self.group = dist.new_group(backend="gloo", **kwargs)
        self.size = dist.get_world_size(self.group)

    def allgather(self, record: np.ndarray) -> np.ndarray:
        import torch

        out = torch.empty((self.size, len(record)), dtype=torch.int64)
        try:
            self.dist.all_gather(list(out.unbind(0)), torch.from_numpy(record), group=self.group)
        except RuntimeError as exc:  # gloo: timed out, or a peer's connection closed
            said = str(exc).splitlines()[0] if str(exc) else ""
            raise NoAnswer("no answer" if not said or "Timed out" in said else said) from exc
        return out.numpy()

    def allgather_object(self, obj) -> list:
        out = [None] * self.size
        self.dist.all_gather_object(out, obj, group=self.group)
        return out

    def free(self) -> None:
        self.dist.destroy_process_group(self.group)

    def end(self, code: int, answered: bool) -> None:
        _flush()
        os._exit(code)


class CallCheck:
    """The ranks' agreement on one memory's collective calls (module docstring).

    ``check(call, detail)`` before each collective call; ``detail`` (construction only) is a
    dict of the arguments every rank must share, with ``'error'``: this rank's refusal of its
    arguments, or None (any rank's refusal is raised on every rank). ``watch_exit(close)``
    after construction: at interpreter exit an open memory announces itself and, agreed, is
    closed with ``close()``; ``release()`` when closed."""

    def __init__(self, transport, rank: int, timeout_s: float | None):
        self.transport, self.rank, self.timeout_s = transport, rank, timeout_s
        self.seq = 0
        self.counts: Counter = Counter()
        self.last: tuple[str, int] | None = None  # the last call every rank agreed on
        self.failure: str | None = None
        self.answered = True  # False once a check got no answer (a collective is left pending)
        self._close = None

    # ----------------------------------------------------------------- the check
    def check(self, call: str, detail: dict | None = None, exiting: bool = False) -> None:
        if self.failure is not None:
            raise UserError(f"{PREFIX}{call}() after an earlier failure of this memory: "
                            f"{self.failure.removeprefix(PREFIX)}")
        self.seq += 1
        count = self.counts[call] + 1
        digest = zlib.crc32(repr(sorted(detail.items())).encode()) if detail is not None else 0
        record = np.array([self.seq, CALLS.index(call), count, digest, int(exiting)], dtype=np.int64)
        started = time.monotonic()
        try:
            records = self.transport.allgather(record)
        except NoAnswer as exc:
            self.answered = False
            waited = time.monotonic() - started
            raise self._fail(UserError(self._no_answer(call, count, exiting, waited, str(exc)))) from None
        if (records[:, :EXITING] == record[:EXITING]).all():
            self.counts[call], self.last = count, (call, count)
            if detail is not None and detail.get("error"):
                raise self._fail(AgreedError(detail["error"]))  # every rank refused the same way
            return
        if (records[:, :DIGEST] == record[:DIGEST]).all():  # the same call, different arguments
            raise self._fail(AgreedError(self._arguments_differ(self.transport.allgather_object(detail))))
        raise self._fail(AgreedError(self._calls_differ(records)))

    def _fail(self, exc: UserError) -> UserError:
        """A failed memory is not closed at exit: the others raised too. Its exit hook stays
        only where a check got no answer, to end the job (_at_exit)."""
        self.failure = str(exc)
        self.release(free=False)
        if not self.answered:
            atexit.register(self._at_exit)
        return exc

    def _agreed(self) -> str:
        if self.last is None:
            return "no call agreed yet"
        return f"all agreed up to call #{self.seq - 1}, {self.last[0]} #{self.last[1]}"

    def _calls_differ(self, records: np.ndarray) -> str:
        parts = by_rank(["exited without close()" if rec[EXITING] else f"called {CALLS[rec[CALL]]} #{rec[COUNT]}"
                         for rec in records], sep=" ")
        return (f"{PREFIX}the ranks' calls differ at call #{self.seq}: {' while '.join(parts)} ({self._agreed()}); "
                f"every rank must call {COLLECTIVE} the same number of times, in the same order")

    def _arguments_differ(self, details: list) -> str:
        errors = [(rank, d["error"]) for rank, d in enumerate(details) if d.get("error")]
        if errors:  # one rank's refusal explains the rest; said with its rank
            return f"rank {errors[0][0]}: {errors[0][1]}"
        problems = []
        for key in details[0]:
            values = [repr(d.get(key)) for d in details]
            if len(set(values)) > 1:
                problems.append(f"{key} ({'; '.join(by_rank(values))})")
        return (f"{PREFIX}the ranks' rehearsal_memory() arguments differ: {', '.join(problems)}; "
                f"every rank must build the memory with the same ones")

    def _no_answer(self, call: str, count: int, exiting: bool, waited: float, reason: str) -> str:
        what = ("exiting without close()" if exiting else "in rehearsal_memory()" if call == CALLS[0]
                else f"at {call} #{count}")
        why = "" if reason == "no answer" else f" ({reason})"
        return (f"{PREFIX}rank {self.rank} waited {waited:.0f} s {what} (call #{self.seq}) for the other ranks, "
                f"which did not make call #{self.seq}{why} ({self._agreed()}): a rank stopped calling the "
                f"memory (blocked elsewhere, or gone) or works alone longer than timeout_s={self.timeout_s}")

    # ----------------------------------------------------------------- exit and release
    def watch_exit(self, close) -> None:
        self._close = close
        atexit.register(self._at_exit)

    def release(self, free: bool = True) -> None:
        """Stop watching the exit; with `free`, also free the records' communicator (collective)."""
        atexit.unregister(self._at_exit)
        self._close = None
        if free:
            self.transport.free()

    def _at_exit(self) -> None:
        """An open memory announces this rank's exit (module docstring). A check that got no
        answer left a collective pending: MPI_Finalize would wait for it forever, so the job
        ends here, with status 1."""
        if not self.answered:
            self.transport.end(1, answered=False)
            return
        close = self._close
        dying = getattr(sys, "last_value", None) is not None  # an uncaught exception ends this process
        if close is None or (dying and self.transport.ends_job_on_failure):
            return
        self._close = None
        try:
            self.check("close", exiting=True)  # an exit matches the others' close() or exit
        except UserError as exc:
            sys.stderr.write(f"rank {self.rank}: {exc}\n")  # one write: the ranks share stderr
            self.transport.end(1, self.answered)
            return
        close()
        self.transport.free()


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass

"""Global rehearsal in your own training loop: the same RehearsalMemory the trainer's agents use
(the buffer, the prefetched draw, the B+R minibatch), built from plain arguments; you keep your
model, optimizer, data and launcher.

    from agents.own_loop import rehearsal_memory
    memory = rehearsal_memory(sample_shape=(1, 8, 8), num_classes=10, batch_size=32, buffer_size=200)
    for x, y in loader:                                 # uint8 samples, int64 labels, host memory
        _, batch = memory.next_batch(x, y)              # B new samples, then R representatives
        logits = model(batch.x.float() / 255)
        memory.insert(x, y)                             # offer the new ones; the next draw starts
        loss = F.cross_entropy(logits, batch.y)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
    memory.close()                                      # collective, like the draws

For DER store logits (``num_extras=num_classes``; ``memory.insert(x, y, logits[:batch.b].detach())``)
and add ``alpha * F.mse_loss(logits[batch.b:], batch.extras)``; ``examples/own_loop.py`` is a
complete program. Under mpirun/srun/horovodrun the ranks draw from each other's slices over MPI
(mpi4py's COMM_WORLD); under torchrun over a gloo group, so call
``torch.distributed.init_process_group("gloo")`` first (a job whose ranks cannot reach each other
is refused, never split into one-rank buffers).

The contract, checked: ``rehearsal_memory()``, ``next_batch``, ``insert``, ``offer_task``,
``refresh_task_extras``, ``send_extras``, ``stats`` and ``close`` are collective -- every rank
makes them the same number of times, in the same order, with the same construction arguments
(with ``buffer='local'`` only construction, ``stats`` and ``close`` are). The ranks compare each
call before making it (agents/collective_check.py), so a mismatch raises AgreedError on every
rank at once, naming the calls ("rank 0 called close #1 while rank 1 called next_batch #4"); a
rank that exits with the memory open is matched with the others' ``close()`` (and closed) or
reported against their draws; a rank that waits more than ``timeout_s`` for the others raises,
naming the call. After ``close()`` (idempotent) every other call raises. Sizes are checked
before anything is allocated: ``num_representatives`` at most the global buffer's slots, and
the buffer plus the batch slots within the node's available memory.
"""
from __future__ import annotations

import math
import numbers
import os
from types import SimpleNamespace

import torch

from agents import memory
from agents.collective_check import PREFIX, CallCheck, MpiTransport, TorchTransport
from common.errors import UserError
from common.options import merge_options
from trainer.launch import detect

MPI_LAUNCH_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "SLURM_NTASKS", "HOROVOD_SIZE")
DEFAULT_TIMEOUT_S = 300.0  # long enough for one rank's evaluation alone, short enough to notice a stuck job
NOT_CONNECTED = {
    "torchrun": "call torch.distributed.init_process_group(\"gloo\") on every rank before rehearsal_memory() "
                "(or launch with mpirun)",
    "mpi": "mpi4py's MPI is not the launcher's: use the mpirun (or srun --mpi=pmix) of the MPI mpi4py was built "
           "with (python -c 'import mpi4py; print(mpi4py.get_config())')",
}


class _Ranks:
    """The part of the trainer's engine RehearsalMemory uses, from MPI or torch.distributed.
    Refuses a launch of several processes whose ranks it cannot connect (each would build a
    one-rank buffer, with no global rehearsal)."""

    def __init__(self):
        import torch.distributed as dist

        launch = detect()
        torch_job = dist.is_available() and dist.is_initialized()
        if launch.launcher == "torchrun" and launch.world_size > 1 and not torch_job:
            raise UserError(f"{PREFIX}torchrun started {launch.world_size} processes but torch.distributed is "
                            f"not initialised, so each would build a one-rank buffer; {NOT_CONNECTED['torchrun']}")
        self.mpi_comm = None
        if not torch_job or any(v in os.environ for v in MPI_LAUNCH_VARIABLES):
            from mpi4py import MPI

            self.mpi_comm = MPI.COMM_WORLD
        if self.mpi_comm is not None:
            self.rank, self.world_size = self.mpi_comm.Get_rank(), self.mpi_comm.Get_size()
        else:
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        if launch.world_size != self.world_size:
            via = "MPI's COMM_WORLD" if self.mpi_comm is not None else "torch.distributed's default group"
            raise UserError(f"{PREFIX}{launch.launcher} started {launch.world_size} processes but {via} has "
                            f"{self.world_size}, so the ranks would build separate buffers; "
                            f"{NOT_CONNECTED.get(launch.launcher, NOT_CONNECTED['mpi'])}")
        self.launch = SimpleNamespace(launcher="your loop", local_size=launch.local_size)

    def allreduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return tensor
        if self.mpi_comm is not None:
            tensor.copy_(torch.from_numpy(self.mpi_comm.allreduce(tensor.numpy())))
        else:
            import torch.distributed as dist

            dist.all_reduce(tensor)
        return tensor

    def call_check(self, timeout_s: float | None) -> CallCheck | None:
        """What the ranks compare their collective calls over; None for one rank."""
        if self.world_size == 1:
            return None
        transport = MpiTransport(self.mpi_comm, timeout_s) if self.mpi_comm is not None else TorchTransport(timeout_s)
        return CallCheck(transport, self.rank, timeout_s)


class OwnLoopMemory(memory.RehearsalMemory):
    """RehearsalMemory whose collective calls the ranks check before making them, and that
    refuses every call after close() (module docstring)."""

    def __init__(self, options: dict, ctx, num_extras: int, calls: CallCheck | None):
        super().__init__(options, ctx, num_extras)
        self._calls, self._closed = calls, False
        self._global = self.kind != "local"  # draws (and rewrites of extras) are collective
        if calls is not None:
            calls.watch_exit(self._close_now)

    def _enter(self, call: str, collective: bool) -> None:
        if self._closed:
            raise UserError(f"{PREFIX}{call}() after close(); build a new memory with rehearsal_memory()")
        if collective and self._calls is not None:
            self._calls.check(call)

    def begin_task(self) -> None:
        self._enter("begin_task", False)
        super().begin_task()

    def begin_epoch(self, epoch: int) -> None:
        self._enter("begin_epoch", False)
        super().begin_epoch(epoch)

    def next_batch(self, x: torch.Tensor, y: torch.Tensor):
        self._enter("next_batch", self._global)
        return super().next_batch(x, y)

    def insert(self, x: torch.Tensor, y: torch.Tensor, extras: torch.Tensor | None = None) -> float:
        self._enter("insert", self._global)
        return super().insert(x, y, extras)

    def offer_task(self, batches, extras_of=None) -> None:
        self._enter("offer_task", self._global)
        super().offer_task(batches, extras_of)

    def refresh_task_extras(self, extras_of, rows: int = 256) -> None:
        self._enter("refresh_task_extras", self._global)
        super().refresh_task_extras(extras_of, rows)

    def write_extras(self, slots, extras: torch.Tensor) -> None:
        self._enter("write_extras", False)
        super().write_extras(slots, extras)

    def send_extras(self, where, extras: torch.Tensor) -> None:
        self._enter("send_extras", self._global)
        super().send_extras(where, extras)

    def stats(self) -> dict:
        self._enter("stats", True)  # the fill per class is summed over the ranks, whatever the kind
        return super().stats()

    def state_dict(self) -> dict:
        self._enter("state_dict", False)
        return super().state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._enter("load_state_dict", False)
        super().load_state_dict(state)

    def close(self) -> None:
        """Collective; a second call does nothing."""
        if self._closed:
            return
        self._enter("close", True)
        self._close_now()
        if self._calls is not None:
            self._calls.release()

    def _close_now(self) -> None:
        self._closed = True
        super().close()


def rehearsal_memory(*, sample_shape, num_classes: int, batch_size: int, buffer_size: int,
                     num_representatives: int = 32, num_extras: int = 0, seed: int = 0, device="cpu",
                     timeout_s: float | None = DEFAULT_TIMEOUT_S, **options) -> OwnLoopMemory:
    """Collective: a RehearsalMemory of ``buffer_size`` slots per rank (the adaptive policy) for B =
    ``batch_size`` new uint8 samples of ``sample_shape`` per step and R = ``num_representatives``.
    ``options`` are the rehearsal agents' (``buffer``, ``mix``, ``async``, ``num_candidates``,
    ``offer``, ...; README, Agents). Samples stay uint8 in the buffer; normalise them yourself.
    ``timeout_s``: how long a rank waits in a collective call for the others before it raises
    (None: forever); raise it if one rank works alone longer (e.g. evaluates on its own)."""
    if timeout_s is not None and (isinstance(timeout_s, bool) or not isinstance(timeout_s, numbers.Real)
                                  or not 0 < timeout_s < math.inf):
        raise UserError(f"{PREFIX}timeout_s must be a positive number of seconds or None, got {timeout_s!r}")
    ranks = _Ranks()
    calls = ranks.call_check(timeout_s)
    error, detail = None, {}
    try:
        options = merge_options("rehearsal_memory()", options, {**memory.OPTIONS, "buffer_size": buffer_size,
                                                               "num_representatives": num_representatives})
        for key, allowed in memory.CHOICES.items():
            if options[key] not in allowed:
                raise UserError(f"{key}={options[key]!r}; valid values: {', '.join(map(repr, allowed))}")
        sample_shape = _check_sizes(sample_shape, num_classes, batch_size, num_extras, options, ranks)
        detail = dict(kind=memory.buffer_kind(options, ranks), sample_shape=sample_shape, num_classes=num_classes,
                      batch_size=batch_size, num_extras=num_extras, seed=seed, **options)
    except UserError as exc:
        if calls is None:
            raise
        error = str(exc)
    if calls is not None:
        calls.check("rehearsal_memory", {**detail, "error": error})  # any rank's refusal raises on every rank
    ctx = SimpleNamespace(engine=ranks, seed=seed, num_classes=num_classes, sample_shape=sample_shape,
                          batch_size=batch_size, train_size=0, device=torch.device(device))
    try:
        return OwnLoopMemory(options, ctx, num_extras, calls)
    except BaseException:
        if calls is not None:
            calls.release(free=False)
        raise


def _check_sizes(sample_shape, num_classes, batch_size, num_extras, options: dict, ranks: _Ranks) -> tuple:
    """The sizes, refused before anything is allocated (a huge R or buffer used to fail inside
    torch.empty or be killed by the kernel); returns the sample shape as a tuple."""
    try:
        shape = tuple(sample_shape)
    except TypeError:
        shape = None
    if shape is None or not all(_is_int(d) and d >= 1 for d in shape):
        raise UserError(f"{PREFIX}sample_shape must be a sequence of integers >= 1, got {sample_shape!r}")
    for name, value, low in (("num_classes", num_classes, 1), ("batch_size", batch_size, 1),
                             ("num_extras", num_extras, 0)):
        if not _is_int(value) or value < low:
            raise UserError(f"{PREFIX}{name} must be an integer >= {low}, got {value!r}")
    if options["policy"] == "fixed":
        per_class = options["slots_per_class"]
        if per_class is not None and (not _is_int(per_class) or per_class < 1):
            raise UserError(f"{PREFIX}slots_per_class must be an integer >= 1, got {per_class!r}")
        size_name, unit, capacity = "slots_per_class", num_classes, num_classes * (per_class or 1)
    else:
        capacity = options["buffer_size"]
        if not _is_int(capacity) or capacity < 1:
            raise UserError(f"{PREFIX}buffer_size must be an integer >= 1 (slots per rank), got {capacity!r}")
        size_name, unit = "buffer_size", 1
    reps, world = options["num_representatives"], ranks.world_size
    if not _is_int(reps) or not 1 <= reps <= capacity * world:
        raise UserError(f"{PREFIX}num_representatives must be an integer in [1, {capacity * world}] (at most the "
                        f"global buffer's slots, {capacity} per rank x {world} rank(s): a draw never returns more), "
                        f"got {reps!r}")
    _check_fits(shape, capacity, (size_name, unit), batch_size, reps, num_extras, ranks.launch.local_size)
    return shape


def _check_fits(shape: tuple, capacity: int, size: tuple, batch_size: int, reps: int, num_extras: int,
                local_size: int) -> None:
    """The buffer's slots and the two B+R batch slots ReplayBatches preallocates, on every rank
    of this node, within the memory available; else name the option that takes the most.
    `size`: the option that sets the capacity and the slots one unit of it is."""
    available = memory._available_memory()
    if available is None:
        return
    row = math.prod(shape) + 8 + 4 * num_extras  # uint8 sample, int64 label, float32 extras
    batch_rows = 2 * (batch_size + reps)
    need = (capacity + batch_rows) * row * local_size
    if need <= available:
        return
    rows_fit = available // (row * local_size)
    if capacity >= batch_rows:
        (name, unit), most = size, (rows_fit - batch_rows) // size[1]
        what = f"{name}={capacity // unit}" + (f" ({capacity} slots)" if unit > 1 else " slots")
    else:  # the batch slots: name the larger of B and R
        name, value = ("batch_size", batch_size) if batch_size >= reps else ("num_representatives", reps)
        most = (rows_fit - capacity) // 2 - (batch_size + reps - value)
        what = f"batch_size={batch_size} + num_representatives={reps} (x 2 batch slots)"
    valid = f"{name} in [1, {most}] here" if most >= 1 else "a smaller sample_shape"
    raise UserError(f"{PREFIX}{what} of {row} bytes (sample_shape {shape}) x {local_size} rank(s) on this node need "
                    f"{need / 2**30:.2f} GiB but {available / 2**30:.2f} GiB is available; valid: {valid}")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)

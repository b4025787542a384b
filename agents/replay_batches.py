"""Augmented minibatches of B new samples + R representatives, with the draw prefetched.

The draw for step t+1 is started right after step t has inserted its new samples, and
runs (on the native buffer's background thread) while step t trains; step t+1 only waits
for what is left of it. Two batch slots alternate so the draw in flight never writes
into the batch being trained on.

Representatives are stored and drawn as they arrived (uint8 images), straight into the
tail of a preallocated augmented batch (`cat=False`, the users' `nil_cpp`: new samples
are copied in front of them, and one host-to-device copy moves the lot), or into a
separate tensor concatenated on the device (`cat=True`, `nil_cpp_cat`). On a GPU the
slots live in pinned memory and copies are non-blocking; a CUDA event recorded after a slot's
copies is waited for before the host writes into that slot again (new samples, or the next
draw), so a copy still in flight never reads half-overwritten rows.
"""
from __future__ import annotations

import time
from typing import NamedTuple, Optional

import numpy as np
import torch


class Minibatch(NamedTuple):
    """B new samples then n representatives, on the device."""
    x: torch.Tensor
    y: torch.Tensor
    extras: Optional[torch.Tensor]  # the representatives' stored extras (n, E), or None
    b: int                          # new samples, rows [0, b)
    n: int                          # representatives, rows [b, b + n)
    where: Optional[np.ndarray]     # (n, 2) owner rank and slot of each representative (track_where)


class ReplayBatches:
    def __init__(self, buffer, batch_size: int, num_reps: int, sample_shape, num_extras: int,
                 device: torch.device, prefetch: bool, cat: bool, track_where: bool = False):
        self.buffer, self.B, self.R = buffer, batch_size, num_reps
        self.device, self.prefetch, self.cat = device, prefetch, cat
        pin = device.type == "cuda"
        rows = num_reps if cat else batch_size + num_reps
        self.x = torch.empty((2, rows, *sample_shape), dtype=torch.uint8, pin_memory=pin)
        self.y = torch.empty((2, rows), dtype=torch.int64, pin_memory=pin)
        self.extras = (torch.empty((2, rows, num_extras), dtype=torch.float32, pin_memory=pin)
                       if num_extras else None)
        self.where = np.zeros((2, rows, 2), dtype=np.int64) if track_where else None
        self.offset = 0 if cat else batch_size  # where representatives start in a slot
        self.cur = 0            # the slot holding this step's representatives
        self.ready = 0          # how many representatives it holds
        self.in_flight = False  # a draw into the other slot was started and not yet waited for
        self.copied = [None, None]  # per slot: CUDA event after its last host-to-device copies

    def _reps(self, slot: int, n: int | None = None):
        o = self.offset
        end = None if n is None else o + n
        extras = self.extras[slot, o:end] if self.extras is not None else None
        where = self.where[slot, o:end] if self.where is not None else None
        return self.x[slot, o:end], self.y[slot, o:end], extras, where

    def collect(self) -> float:
        """Finish the draw started for this step and make its slot current; returns the seconds
        spent waiting for it."""
        if not self.in_flight:
            return 0.0
        start = time.perf_counter()
        self.ready = self.buffer.wait()
        self.cur, self.in_flight = 1 - self.cur, False
        return time.perf_counter() - start

    def launch(self) -> float:
        """Start the draw for the next step into the other slot (collective on global buffers);
        returns the seconds it blocked the caller (the whole draw when not prefetching)."""
        start = time.perf_counter()
        self._writable(1 - self.cur)
        rx, ry, rextras, rwhere = self._reps(1 - self.cur)
        if rwhere is None:
            self.buffer.start(self.R, rx, ry, rextras)
        else:
            self.buffer.start(self.R, rx, ry, rextras, rwhere)
        self.in_flight = True
        if not self.prefetch:
            self.collect()
        return time.perf_counter() - start

    def batch(self, x: torch.Tensor, y: torch.Tensor) -> Minibatch:
        """This step's new samples first, then its representatives, on the device."""
        n, b, s = self.ready, len(y), self.cur
        pin = self.device.type == "cuda"

        def dev(t):
            return t.to(self.device, non_blocking=pin)

        rx, ry, rextras, rwhere = self._reps(s, n)
        if n and not self.cat and b == self.B:
            # new samples in front of the representatives already in place: one copy to the device
            self._writable(s)
            self.x[s, :b].copy_(x)
            self.y[s, :b].copy_(y)
            out = dev(self.x[s, : b + n]), dev(self.y[s, : b + n])
        elif n:
            out = torch.cat([dev(x), dev(rx)]), torch.cat([dev(y), dev(ry)])
        else:
            out = dev(x), dev(y)
        reps_extras = dev(rextras) if rextras is not None and n else None
        if pin:
            self.copied[s] = torch.cuda.Event()
            self.copied[s].record()
        return Minibatch(*out, reps_extras, b, n, rwhere.copy() if rwhere is not None else None)

    def _writable(self, slot: int) -> None:
        """Wait for the slot's last non-blocking copies to the device before overwriting it."""
        event = self.copied[slot]
        if event is not None:
            event.synchronize()
            self.copied[slot] = None

    def state_dict(self) -> dict:
        """The representatives waiting for the next step, so a resumed run uses the same ones."""
        self.collect()
        rx, ry, rextras, rwhere = self._reps(self.cur, self.ready)
        return {"n": self.ready, "x": rx.clone(), "y": ry.clone(),
                "extras": rextras.clone() if rextras is not None else None,
                "where": rwhere.copy() if rwhere is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.collect()
        n = state["n"]
        rx, ry, rextras, rwhere = self._reps(self.cur, n)
        rx.copy_(state["x"])
        ry.copy_(state["y"])
        if rextras is not None and state["extras"] is not None:
            rextras.copy_(state["extras"])
        if rwhere is not None and state.get("where") is not None:
            rwhere[:] = state["where"]
        self.ready = n

    def close(self) -> None:
        self.collect()

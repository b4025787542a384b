"""A spy around the buffer a rehearsal agent builds: the fingerprints of every sample it inserts
and of every representative it draws, for the provenance jobs under mpirun (agent_provenance.py)
and torchrun (torch_provenance.py). Importing it changes nothing; install() does."""
import hashlib

import numpy as np

import agents.memory

spies = []


def fingerprint(x_row, label) -> str:
    return hashlib.sha1(np.ascontiguousarray(x_row).tobytes() + bytes([int(label)])).hexdigest()


class Spy:
    def __init__(self, inner):
        self.inner, self.inserted, self.drawn, self.pending = inner, set(), [], None
        spies.append(self)

    def add(self, x, y, extras=None):
        for row, label in zip(np.asarray(x), np.asarray(y)):
            self.inserted.add(fingerprint(row, label))
        return self.inner.add(x, y, extras)

    def start(self, r, out_x, out_y, out_extras=None, out_where=None):
        self.pending = (out_x, out_y)
        self.inner.start(r, out_x, out_y, out_extras, out_where)

    def wait(self):
        n = self.inner.wait()
        out_x, out_y = self.pending
        self.drawn += [fingerprint(np.asarray(out_x[i]), int(out_y[i])) for i in range(n)]
        return n

    def __getattr__(self, name):
        return getattr(self.inner, name)


def install() -> None:
    """Every buffer agents/memory.py builds from now on is wrapped in a Spy."""
    real_make_buffer = agents.memory.make_buffer
    agents.memory.make_buffer = lambda *a, **k: Spy(real_make_buffer(*a, **k))

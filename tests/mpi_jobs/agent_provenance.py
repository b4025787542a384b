"""Under mpirun: with global sampling, each rank rehearses samples the OTHER rank inserted.

Wraps the buffer the agent builds in a spy that records a fingerprint of every inserted
sample and of every representative drawn, runs one epoch per task (so each sample is
inserted by exactly one rank), then checks provenance across ranks."""
import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

import agents.er  # noqa: E402
import main  # noqa: E402

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
        self.inner.add(x, y, extras)

    def start(self, r, out_x, out_y, out_extras=None):
        self.pending = (out_x, out_y)
        self.inner.start(r, out_x, out_y, out_extras)

    def wait(self):
        n = self.inner.wait()
        out_x, out_y = self.pending
        self.drawn += [fingerprint(np.asarray(out_x[i]), int(out_y[i])) for i in range(n)]
        return n

    def __getattr__(self, name):
        return getattr(self.inner, name)


real_make_buffer = agents.er.make_buffer
agents.er.make_buffer = lambda *a, **k: Spy(real_make_buffer(*a, **k))

agent, results = sys.argv[1], sys.argv[2]
code = main.main(["--agent", agent, "--epochs", "1", "--backend", "torch", "--results-dir", results,
                  "--run-name", f"provenance-{agent}", "--plots", "false", "--tensorboard", "false"])
assert code == 0, f"main exited {code}"

from mpi4py import MPI  # noqa: E402

comm = MPI.COMM_WORLD
spy = spies[0]
everyone = comm.allgather(spy.inserted)
mine = spy.inserted
others = set().union(*(s for r, s in enumerate(everyone) if r != comm.rank)) - mine
inserted = set().union(*everyone)
assert spy.drawn, "no representatives were drawn"
unknown = [d for d in spy.drawn if d not in inserted]
assert not unknown, f"rank {comm.rank}: {len(unknown)} representatives were never inserted by any rank"
from_others = sum(d in others for d in spy.drawn)
expect_remote = agent != "nil_local"
print(f"rank {comm.rank} {agent}: {len(spy.drawn)} drawn, {from_others} inserted only by another rank", flush=True)
if expect_remote:
    assert from_others > 0.25 * len(spy.drawn), f"rank {comm.rank}: only {from_others} remote representatives"
else:
    assert from_others == 0, f"rank {comm.rank}: local sampling returned {from_others} remote samples"

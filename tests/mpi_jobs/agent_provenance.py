"""Under mpirun: with global sampling, each rank rehearses samples the OTHER rank inserted.

Wraps the buffer the agent builds in a spy that records a fingerprint of every inserted
sample and of every representative drawn, runs one epoch per task (so each sample is
inserted by exactly one rank), then checks provenance across ranks."""
import sys

from provenance_spy import install, spies
from trainer import cli

install()

agent, results = sys.argv[1], sys.argv[2]
code = cli.main(["--agent", agent, "--epochs", "1", "--backend", "torch", "--results-dir", results,
                  "--run-name", f"provenance-{agent}", "--plots", "false", "--tensorboard", "false"])
assert code == 0, f"main exited {code}"

from mpi4py import MPI  # noqa: E402  (for the checks after the run)

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

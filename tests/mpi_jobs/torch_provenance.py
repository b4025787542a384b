"""Under torchrun: main.py with a spy around the buffer the agent builds (as agent_provenance.py
does under mpirun), so the test can check that each rank rehearses samples the OTHER rank inserted.

    torchrun --standalone --nproc-per-node 2 tests/mpi_jobs/torch_provenance.py AGENT RESULTS NAME

main.py ends torch.distributed with the run, so each rank writes what it saw to
RESULTS/NAME-provenance-rank<r>.json (the buffer's class, the fingerprints of the samples it
inserted and of the representatives it drew) and tests/test_torch_transport.py compares them."""
import json
import os
import sys
from pathlib import Path

from provenance_spy import install, spies
from trainer import cli

install()

agent, results, name = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
code = cli.main(["--agent", agent, "--epochs", "1", "--backend", "torch", "--results-dir", str(results),
                  "--run-name", name, "--plots", "false", "--tensorboard", "false"])
assert code == 0, f"main exited {code}"
spy = spies[0]
(results / f"{name}-provenance-rank{os.environ['RANK']}.json").write_text(json.dumps(
    {"buffer": type(spy.inner).__name__, "inserted": sorted(spy.inserted), "drawn": spy.drawn}))

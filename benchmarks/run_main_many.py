"""Run main.main() for several command lines in one process (one rank of an mpirun job, or
alone), so a matrix of runs pays Python's and torch's start-up once. Each run is given as
one argument, a JSON list of flags; any failure exits non-zero. Used by the benchmarks
(measure.run_in_one_job) and the tests (tests/test_agents.py).

    python benchmarks/run_main_many.py '["--agent", "base"]' '["--agent", "er", "--seed", "1"]'
"""
import json
import sys

from trainer.cli import main

for spec in sys.argv[1:]:
    argv = json.loads(spec)
    code = main(argv)
    if code != 0:
        print(f"run_main_many: main.py {' '.join(argv)} exited {code}", file=sys.stderr)
        sys.exit(code)

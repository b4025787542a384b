"""Run main.main() for several command lines in one process (one rank of an mpirun job, or
alone), so a matrix of runs pays Python's and torch's start-up once. Each run is given as
one argument, a JSON list of flags; any failure exits non-zero."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import main  # noqa: E402

for spec in sys.argv[1:]:
    argv = json.loads(spec)
    code = main.main(argv)
    if code != 0:
        print(f"run_main_many: main.py {' '.join(argv)} exited {code}", file=sys.stderr)
        sys.exit(code)

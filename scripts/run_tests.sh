#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite, multi-rank mpirun jobs included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
exec .venv/bin/python -m pytest -q --timeout 1200 tests "$@"

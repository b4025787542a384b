#!/usr/bin/env bash
# Run the trainer on NP ranks with Open MPI's mpirun; extra arguments go to main.py.
#
#   scripts/launch/mpirun.sh                          # the main job (preset `main`) on 2 ranks
#   scripts/launch/mpirun.sh --config naive           # another preset of config.yaml instead
#   NP=4 scripts/launch/mpirun.sh --backend torch --epochs 3
#   MPIRUN_ARGS="--hostfile hosts -x PATH -x PYTHONPATH" NP=16 scripts/launch/mpirun.sh
#
# Edit (or set in the environment):
#   NP           ranks (default 2)
#   PYTHON       the Python that has the trainer's packages (default: python on PATH)
#   MPIRUN_ARGS  more mpirun options: a hostfile, -x VAR to export variables to other nodes,
#                --map-by ppr:4:node, --bind-to core ... (default --bind-to none, so torch's
#                threads are not all pinned to one core)
# Added for you: --allow-run-as-root when run as root (containers), and --oversubscribe when
# NP is larger than this machine's cores (on one machine only: with a hostfile, the slots
# it lists decide).
# Open MPI's own settings are honoured and none is set here. On a machine with no UCX
# hardware (a laptop, a VM, a container), Open MPI may try UCX and warn or fail; then export
#   OMPI_MCA_pml=^ucx OMPI_MCA_osc=^ucx
# before running this script. Runs from the repository root (relative paths, config.yaml).
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
enter_repository
check_var NP "the number of ranks" 1
PYTHON=${PYTHON:-python}
args=(-np "$NP")
if [ "$(id -u)" -eq 0 ]; then
  args+=(--allow-run-as-root)
fi
if [[ " ${MPIRUN_ARGS:-} " != *" --hostfile "* && " ${MPIRUN_ARGS:-} " != *" -H "* && \
      " ${MPIRUN_ARGS:-} " != *" --host "* && "$NP" -gt "$(nproc)" ]]; then
  args+=(--oversubscribe)
fi
if [[ " ${MPIRUN_ARGS:-} " != *" --bind-to "* ]]; then
  args+=(--bind-to none)
fi
# shellcheck disable=SC2086  # MPIRUN_ARGS is a list of options, split on purpose
exec mpirun "${args[@]}" ${MPIRUN_ARGS:-} "$PYTHON" main.py --config main "$@"

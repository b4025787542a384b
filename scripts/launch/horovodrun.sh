#!/usr/bin/env bash
# Run the trainer on NP ranks with horovodrun and the Horovod engine; extra arguments go to
# main.py.
#
#   scripts/launch/horovodrun.sh                      # the main job (preset `main`) on 2 ranks
#   NP=8 HOROVODRUN_ARGS="-H node1:4,node2:4" scripts/launch/horovodrun.sh --epochs 3
#
# Edit (or set in the environment):
#   NP               ranks (default 2; on one machine horovodrun gives localhost NP slots)
#   PYTHON           the Python that has the trainer's packages (default: python on PATH)
#   HOROVODRUN_ARGS  more horovodrun options: -H host1:4,host2:4 or -hostfile FILE,
#                    --network-interface ib0, --gloo or --mpi to force a controller
#   MPI_ARGS         options horovodrun hands to mpirun (its MPI controller)
#   BINDING_ARGS     mpirun's binding options (default "--bind-to none --map-by slot": Horovod
#                    0.28.1 would pass the single-dash -bind-to/-map-by, which Open MPI 5's
#                    mpirun rejects with "Executable: none")
# horovodrun uses its MPI controller when Horovod was built with MPI and mpirun is on PATH:
# then the ranks share MPI and the global rehearsal buffers work. With --gloo (a Horovod
# built with gloo) there is no MPI between ranks: the global buffers are unavailable (the
# trainer says so); base and the local buffer work.
# As root, --allow-run-as-root is passed to mpirun for you. Open MPI's own settings (e.g.
# OMPI_MCA_pml=^ucx OMPI_MCA_osc=^ucx on a machine with no UCX hardware) are honoured; none
# is set here. Runs from the repository root (relative paths, config.yaml).
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
enter_repository
check_var NP "the number of ranks" 1
PYTHON=${PYTHON:-python}
mpi_args=${MPI_ARGS:-}
if [ "$(id -u)" -eq 0 ]; then
  mpi_args="--allow-run-as-root $mpi_args"
fi
args=(-np "$NP" --binding-args="${BINDING_ARGS:---bind-to none --map-by slot}")
if [ -n "${mpi_args// /}" ]; then
  args+=(--mpi-args="$mpi_args")
fi
# shellcheck disable=SC2086  # HOROVODRUN_ARGS is a list of options, split on purpose
exec horovodrun "${args[@]}" ${HOROVODRUN_ARGS:-} "$PYTHON" main.py --backend horovod --config main "$@"

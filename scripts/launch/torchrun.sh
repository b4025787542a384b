#!/usr/bin/env bash
# Run the trainer on NP ranks per node with torchrun and the torch.distributed engine (DDP;
# gloo on CPU, NCCL on GPU); extra arguments go to main.py.
#
#   scripts/launch/torchrun.sh                        # the main job (preset `main`)
#   NP=4 scripts/launch/torchrun.sh --epochs 3
#   NNODES=2 RDZV_ENDPOINT=node1:29400 NP=4 scripts/launch/torchrun.sh   # on each node
#
# Edit (or set in the environment):
#   NP             ranks per node (default 2; e.g. the number of GPUs per node)
#   NNODES         nodes (default 1: a standalone rendezvous on a free local port)
#   RDZV_ENDPOINT  host:port of the rendezvous, needed when NNODES > 1 (run this script on
#                  every node with the same value)
#   RDZV_ID        job id shared by the nodes (default: cl-trainer)
#   TORCHRUN_ARGS  more torchrun options (--max-restarts, --log-dir ...)
# Under torchrun there is no MPI between ranks: the global rehearsal buffer's draws go over
# torch.distributed (a gloo group of its own) instead of MPI one-sided reads (README, Launching).
# torchrun sets OMP_NUM_THREADS=1 per rank unless you set it.
# Runs from the repository root (relative paths, config.yaml).
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
enter_repository
NNODES=${NNODES:-1}
check_var NP "the number of ranks per node" 1
check_var NNODES "the number of nodes" 1
if [ "$NNODES" -gt 1 ]; then
  check_var RDZV_ENDPOINT "the rendezvous host:port of a run on $NNODES nodes" "" \
    "set it to the same host:port on every node (e.g. RDZV_ENDPOINT=node1:29400)"
  rdzv=(--nnodes "$NNODES" --rdzv-backend c10d --rdzv-endpoint "$RDZV_ENDPOINT"
        --rdzv-id "${RDZV_ID:-cl-trainer}")
else
  rdzv=(--standalone)
fi
# shellcheck disable=SC2086  # TORCHRUN_ARGS is a list of options, split on purpose
exec torchrun "${rdzv[@]}" --nproc-per-node "$NP" ${TORCHRUN_ARGS:-} main.py --backend torch --config main "$@"

#!/usr/bin/env bash
# A single-node Slurm on this machine, to try scripts/launch/slurm.sbatch locally (and for
# tests/test_slurm.py). Needs root; installs Debian's slurm-wlm, munge and libpmix-dev with apt
# when they are missing (libpmix-dev, not just libpmix2: Debian's mpi/pmix plugin loads
# pmix2/lib/libpmix.so, which only the -dev package has; without it srun says "can not load
# PMIx library"), and touches no system config: its own munged (own key and socket),
# slurmctld and slurmd run from a state folder, on their own ports.
#
#   sudo bash scripts/slurm_local.sh start      # install if needed, write slurm.conf, start
#   eval "$(bash scripts/slurm_local.sh env)"   # point sbatch/srun/squeue at it (SLURM_CONF)
#   sbatch -N1 --ntasks-per-node=2 --cpus-per-task=1 --gpus-per-task=0 scripts/launch/slurm.sbatch
#   bash scripts/slurm_local.sh status          # daemons and the node's state
#   bash scripts/slurm_local.sh stop            # cancel its jobs, stop the daemons it started
#
# Settings (environment): SLURM_LOCAL_DIR (state folder, default /tmp/slurm-local),
# SLURM_LOCAL_PORT (slurmctld's port, default 16817; slurmd takes the next one).
# The node is this host as `slurmd -C` sees it (CPUs, sockets, cores, memory). Only the daemons
# whose pid files are in the state folder are ever stopped.
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/slurm-local}
PORT=${SLURM_LOCAL_PORT:-16817}
CONF=$DIR/slurm.conf
PACKAGES=(slurm-wlm munge libpmix2 libpmix-dev)

die() { echo "slurm_local.sh: $*" >&2; exit 1; }

pid_of() {  # the pid of a daemon this script started, if it is still running (and still it)
  local file=$DIR/$1.pid pid
  [ -s "$file" ] || return 1
  pid=$(cat "$file")
  [ "$(ps -p "$pid" -o comm= 2>/dev/null)" = "$1" ] && echo "$pid"
}

have_packages() {  # on Debian the packages; elsewhere the commands (the smoke test checks PMIx)
  if command -v dpkg-query >/dev/null; then
    local p
    for p in "${PACKAGES[@]}"; do
      dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || return 1
    done
  fi
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null &&
    command -v sbatch >/dev/null && command -v srun >/dev/null
}

install_packages() {
  have_packages && return 0
  [ "$(id -u)" = 0 ] || die "Slurm is not installed and installing it needs root: run as root, or 'apt-get install ${PACKAGES[*]}' yourself"
  command -v apt-get >/dev/null || die "Slurm is not installed and there is no apt-get: install slurmctld, slurmd, srun, munge and Slurm's PMIx plugin yourself"
  echo "slurm_local.sh: installing ${PACKAGES[*]} with apt-get" >&2
  local log=$DIR/apt.log policy=/usr/sbin/policy-rc.d ok=1
  # The packages must not start the system's own munged/slurmd (this script starts its own):
  # a policy-rc.d that denies starts, for the time of the install, where there is none.
  local own_policy=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1; fi
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"; } >"$log" 2>&1 </dev/null || ok=0
  if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi
  if [ "$ok" = 0 ]; then
    tail -n 20 "$log" >&2
    die "apt-get install ${PACKAGES[*]} failed (full log: $log)"
  fi
  have_packages || die "installed ${PACKAGES[*]} but slurmctld, slurmd, munged, sbatch or srun is still missing"
}

write_conf() {
  local host node
  host=$(hostname -s)
  # `slurmd -C` prints this host's layout: "NodeName=h CPUs=.. Boards=.. ... RealMemory=..".
  node=$(slurmd -C | head -n1 | sed -e "s/^NodeName=[^ ]*//")
  [ -n "$node" ] || die "slurmd -C printed no node layout"
  cat >"$CONF" <<EOF
# Written by scripts/slurm_local.sh: a one-node cluster for trying the launcher locally.
ClusterName=local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire: a requeued job waits this long before it may start again (default 120 s).
AuthInfo=socket=$DIR/munge.socket,cred_expire=15
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
# No cgroups (containers rarely allow them): processes are tracked by their parent chain.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# Look at pending jobs every second or two (a requeued job is eligible again after cred_expire).
SchedulerParameters=bf_interval=1,sched_interval=2
# Jobs say --mpi themselves (slurm.sbatch: --mpi=pmix).
MpiDefault=none
# A node that was down (e.g. slurmd restarted) comes back by itself.
ReturnToService=2
KillWait=5
MailProg=/bin/true
InactiveLimit=0
MinJobAge=600
NodeName=$host NodeAddr=127.0.0.1$node State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

smoke_test() {  # a one-task step under PMIx: fails here, not in the user's job, without libpmix
  local out
  if ! out=$(SLURM_CONF=$CONF timeout 60 srun -N1 -n1 --mpi=pmix --gpus-per-task=0 true 2>&1); then
    echo "$out" >&2
    tail -n 20 "$DIR/slurmd.log" >&2 || true
    die "a test step with srun --mpi=pmix failed (logs: $DIR/slurmd.log, $DIR/slurmctld.log)"
  fi
}

start() {
  mkdir -p "$DIR"
  [ "$(id -u)" = 0 ] || die "slurmd must run as root: run this as root (sudo)"
  if pid_of slurmctld >/dev/null || pid_of slurmd >/dev/null || pid_of munged >/dev/null; then
    die "already running from $DIR ('$0 stop' first, or set SLURM_LOCAL_DIR and SLURM_LOCAL_PORT for another one)"
  fi
  install_packages  # before any daemon starts: a slurmd started without PMIx keeps failing
  chmod 0755 "$DIR"
  mkdir -p "$DIR/state" "$DIR/spool"
  # The state folder is kept across stop/start: job ids go on counting, so a new job never gets
  # the results folder (results/<name>-<id>) of a job from an earlier start.
  write_conf

  # A start that fails half way stops what it had started.
  trap 'echo "slurm_local.sh: start failed; stopping what it started" >&2; stop_daemons slurmd slurmctld >&2; stop_daemons munged >&2' EXIT
  [ -s "$DIR/munge.key" ] || mungekey --create --keyfile="$DIR/munge.key" 2>/dev/null ||
    dd if=/dev/urandom of="$DIR/munge.key" bs=1024 count=1 status=none
  chmod 0600 "$DIR/munge.key"
  munged --force --key-file="$DIR/munge.key" --socket="$DIR/munge.socket" \
    --pid-file="$DIR/munged.pid" --log-file="$DIR/munged.log" --seed-file="$DIR/munged.seed" ||
    die "munged did not start (log: $DIR/munged.log)"

  export SLURM_CONF=$CONF
  slurmctld -f "$CONF" || die "slurmctld did not start (log: $DIR/slurmctld.log)"
  slurmd -f "$CONF" || die "slurmd did not start (log: $DIR/slurmd.log)"

  local i state=""
  for i in $(seq 60); do
    state=$(sinfo -h -N -o %T 2>/dev/null | head -n1) || true
    case $state in idle|mixed|allocated) break ;; esac
    sleep 0.5
  done
  case $state in idle|mixed|allocated) ;; *)
    tail -n 20 "$DIR/slurmctld.log" "$DIR/slurmd.log" >&2 || true
    die "the node did not come up (state '${state:-none}'; logs in $DIR)" ;;
  esac
  smoke_test
  trap - EXIT
  echo "slurm_local.sh: running ($(sinfo -h -N -o '%N %c CPUs %m MB %T')); state in $DIR"
  echo "  eval \"\$(bash $0 env)\"   # then sbatch, srun, squeue, scontrol use it"
}

stop() {
  local i
  if pid_of slurmctld >/dev/null; then  # let running jobs end first, so no step is left behind
    SLURM_CONF=$CONF timeout 20 scancel --full --partition=local 2>/dev/null || true
    for i in $(seq 40); do
      [ -z "$(SLURM_CONF=$CONF timeout 5 squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.5
    done
  fi
  # A job step's slurmstepd can outlive its job by some seconds (PMIx clean-up after a killed
  # rank); each holds a socket in the spool folder until it exits.
  local steps=""
  for i in $(seq 60); do
    steps=$(find "$DIR/spool" -maxdepth 1 -type s 2>/dev/null)
    [ -z "$steps" ] && break
    sleep 0.5
  done
  [ -z "$steps" ] || echo "slurm_local.sh: warning: job steps still running:" $steps >&2
  stop_daemons slurmd slurmctld  # together (each takes a second or two), then munge
  stop_daemons munged
}

stop_daemons() {  # SIGTERM, up to 10 s to exit, then SIGKILL
  local d pid pids=() names=()
  for d in "$@"; do
    pid=$(pid_of "$d") || continue
    kill "$pid" 2>/dev/null || true
    pids+=("$pid") names+=("$d")
  done
  local i
  for i in "${!pids[@]}"; do
    for _ in $(seq 100); do kill -0 "${pids[$i]}" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "${pids[$i]}" 2>/dev/null; then kill -9 "${pids[$i]}" 2>/dev/null || true; fi
    rm -f "$DIR/${names[$i]}.pid"
    echo "slurm_local.sh: stopped ${names[$i]} (${pids[$i]})"
  done
}

status() {
  local d pid up=0
  for d in munged slurmctld slurmd; do
    if pid=$(pid_of "$d"); then echo "$d: running ($pid)"; up=$((up + 1)); else echo "$d: stopped"; fi
  done
  [ "$up" -gt 0 ] && SLURM_CONF=$CONF sinfo -N 2>/dev/null || true
  [ "$up" = 3 ]
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 start|stop|restart|status|env" >&2; exit 2 ;;
esac

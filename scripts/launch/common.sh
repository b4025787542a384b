# Sourced by the launchers (mpirun.sh, horovodrun.sh, torchrun.sh, slurm.sbatch): what they share.
#   enter_repository  run from the repository root (relative paths, config.yaml), with the set-up
#                     script's venv on PATH (its python, mpirun, horovodrun, torchrun) when there
#                     is one and no other venv is active, and NP (ranks, default 2) set
#   check_var         refuse a variable that is unset or not a whole number, in one line

# check_var NAME WHAT MINIMUM [IF_UNSET]: say in one line what is wrong and exit 2 (before anything
# is launched) unless $NAME is set and, when MINIMUM is not empty, a whole number >= MINIMUM
# (then written back without leading zeros: 08 is 8, not an octal error).
# WHAT names the variable's meaning ("the number of ranks"); IF_UNSET says what to do when it is
# not set at all. Without this, bash says "unbound variable" or "integer expression expected",
# and mpirun takes NP=0 to mean "as many ranks as there are slots".
check_var() {
  local name=$1 what=$2 minimum=$3 if_unset=${4:-"set $1"} value=${!1-}
  local launcher=${launcher_name:-${0##*/}}  # slurm.sbatch names itself: sbatch runs a copy
  if [ -z "$value" ]; then
    echo "$launcher: error: $name is not set: $what; $if_unset" >&2
    exit 2
  fi
  # at most 18 digits (leading zeros aside): bash's 64-bit arithmetic would wrap a longer number
  if [ -n "$minimum" ] && { [[ ! $value =~ ^0*[0-9]{1,18}$ ]] || (( 10#$value < minimum )); }; then
    echo "$launcher: error: $name=${value//[$'\n\r']/ }: $what must be a whole number >= $minimum" >&2
    exit 2
  fi
  if [ -n "$minimum" ]; then
    printf -v "$name" '%d' "$((10#$value))"
  fi
}

# enter_repository: the launchers' set-up (slurm.sbatch has its own, for sbatch runs a copy of it).
enter_repository() {
  cd "$(dirname "${BASH_SOURCE[0]}")/../.."
  if [ -z "${VIRTUAL_ENV:-}" ] && [ -x .venv/bin/python ]; then
    export PATH="$PWD/.venv/bin:$PATH"
  fi
  NP=${NP:-2}
}

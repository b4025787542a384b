# Sourced by the launchers: run from the repository root (relative paths, config.yaml), with
# the set-up script's venv on PATH (its python, mpirun, horovodrun, torchrun) when there is
# one and no other venv is active, and NP (ranks, default 2) set.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if [ -z "${VIRTUAL_ENV:-}" ] && [ -x .venv/bin/python ]; then
  export PATH="$PWD/.venv/bin:$PATH"
fi
NP=${NP:-2}

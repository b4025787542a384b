#!/usr/bin/env bash
# Set up everything on a fresh machine, into ./.venv: MPI, PyTorch + torchvision, the other
# Python dependencies, this project (editable), the native buffer (cpp_loader), and Horovod built from source.
# Idempotent: a second run only installs what changed.
#   WITH_HOROVOD=0 scripts/setup.sh      skip Horovod (the torch backend needs none)
#   PYTHON=python3.11 scripts/setup.sh   the interpreter to make the venv from
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
VPY=.venv/bin/python
"$VPY" -m pip install -q --upgrade pip setuptools wheel
"$VPY" -m pip install -q -r requirements.txt
# The project itself (pyproject.toml), editable: agents, buffers, common, data, models and
# trainer import from any folder, and edits here take effect without reinstalling.
"$VPY" -m pip install -q --no-build-isolation --no-deps -e .

# The native buffer, rebuilt only when its sources change.
stamp=.venv/cpp_loader.sha256
sum=$(find cpp_loader -type f \( -name '*.cpp' -o -name '*.hpp' -o -name '*.py' -o -name '*.txt' -o -name '*.toml' \) \
      -not -path '*/build*' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ] || ! "$VPY" -c "import cpp_loader._core" 2>/dev/null; then
  PATH="$PWD/.venv/bin:$PATH" "$VPY" -m pip install -q --no-build-isolation ./cpp_loader
  echo "$sum" > "$stamp"
fi

if [ "${WITH_HOROVOD:-1}" = 1 ]; then
  PATH="$PWD/.venv/bin:$PATH" bash scripts/install_horovod.sh "$VPY"
fi
echo "set-up done: activate with  . .venv/bin/activate"

#!/usr/bin/env bash
# Build Horovod 0.28.1 (PyPI's last release) from its source against the installed PyTorch.
#
# Why: Horovod 0.28.1 compiles with C++14, but PyTorch >= 2.1 headers need C++17 and
# torch 2.14's need C++20; the fix is only on Horovod's unreleased master. Raising the
# C++ standard in its CMake files is all it takes (see ../shared/DESIGN.md, decision 4).
# Builds the MPI and gloo controllers and the PyTorch framework, CPU operations
# (add HOROVOD_GPU_OPERATIONS=NCCL to the environment on a GPU cluster). About 5 minutes
# on 2 cores. Usage: scripts/install_horovod.sh [python]   (default: the python on PATH)
set -euo pipefail
PYTHON=${1:-python}
VERSION=0.28.1

if "$PYTHON" -c "import horovod.torch" 2>/dev/null; then
  echo "horovod.torch already importable: nothing to do"; exit 0
fi

TORCH_MAJOR_MINOR=$("$PYTHON" -c "import torch; print('.'.join(torch.__version__.split('.')[:2]))")
CXX_STD=17
if "$PYTHON" -c "import sys, torch; v=tuple(map(int, torch.__version__.split('+')[0].split('.')[:2])); sys.exit(0 if v >= (2, 14) else 1)"; then
  CXX_STD=20
fi
echo "building horovod $VERSION against torch $TORCH_MAJOR_MINOR with C++$CXX_STD"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m pip download --no-deps --no-binary :all: --no-build-isolation -q -d "$work" "horovod==$VERSION"
tar -xzf "$work"/horovod-$VERSION.tar.gz -C "$work"
src="$work/horovod-$VERSION"
grep -rl --include=CMakeLists.txt 'CMAKE_CXX_STANDARD 14' "$src" | xargs sed -i "s/CMAKE_CXX_STANDARD 14/CMAKE_CXX_STANDARD $CXX_STD/"

# A CUDA build of torch needs the CUDA toolkit's headers, even for CPU-only Horovod ops.
if [ -z "${CUDA_HOME:-}" ] && "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.version.cuda else 1)"; then
  for d in /usr/local/cuda /opt/cuda; do [ -d "$d" ] && export CUDA_HOME=$d && break; done
fi
if [ -n "${CUDA_HOME:-}" ]; then
  # Horovod's bundled FindCUDAToolkit starts from the first nvcc on PATH: make it the toolkit's.
  export CUDAToolkit_ROOT=$CUDA_HOME PATH=$CUDA_HOME/bin:$PATH
fi
export CMAKE_POLICY_VERSION_MINIMUM=3.5 \
  HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 \
  HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 \
  MAKEFLAGS="-j$(nproc)"
"$PYTHON" -m pip install --no-build-isolation --no-deps "$src"
"$PYTHON" -m pip install cloudpickle psutil pyyaml packaging cffi  # horovod's run-time needs
"$PYTHON" -c "import horovod.torch as hvd; print('horovod', hvd.__version__ if hasattr(hvd, '__version__') else '', 'built with MPI:', hvd.mpi_built(), 'gloo:', hvd.gloo_built())"

#!/usr/bin/env bash
# The GPU check of backend "cupy", as one script for a machine with an NVIDIA GPU, CuPy and numba-cuda:
#   1. the GPU tests: the CUDA kernels against their oracles and whole models / training on real CuPy arrays
#      (tests/test_kernels_cuda_*.py, tests/test_cupy_backend.py with NUMBA_ENABLE_CUDASIM=0);
#   2. the GPU benchmark against PyTorch + SpikingJelly on the same GPU (validation/bench_gpu.py).
#
#   bash validation/gpu_check.sh [WHEELS]
#
# WHEELS: an optional folder of wheels for what the GPU machine lacks and cannot download (e.g. made on a
# machine with a network: pip download -d wheels scikit-learn joblib spikingjelly hypothesis autograd
# pymittagleffler pytest); they are installed with --no-index. refssm itself is installed without
# dependencies, over the machine's own numpy, scipy, h5py, cupy, numba-cuda and torch.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ $# -ge 1 ]; then
    python -m pip install -q --no-index --find-links "$1" scikit-learn spikingjelly hypothesis autograd \
        pymittagleffler pytest || echo "gpu_check: some wheels from $1 did not install"
fi
python -m pip install -q --no-deps --no-build-isolation -e . || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python -c "import cupy, numba; from numba import cuda; print('cupy', cupy.__version__, 'numba', numba.__version__,
'numba.cuda', getattr(cuda, 'implementation', '?'), 'device', cuda.get_current_device().name)"
echo "== GPU tests"
NUMBA_ENABLE_CUDASIM=0 python -m pytest -q -p no:cacheprovider -rs tests/test_kernels_cuda_*.py tests/test_cupy_backend.py
echo "== GPU benchmark"
python validation/bench_gpu.py --rounds 2

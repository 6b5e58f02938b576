#!/usr/bin/env bash
# Builds ganfast._C with its CUDA kernels on a machine without a GPU (nvcc needs none), for the device machine's
# Python and GPU: by default Python 3.12 and sm_90 (H100/H200). The module lands in ganfast/ next to any other
# build (the file name carries the Python version), is git-ignored, and travels to the device as a carried path:
#   bash benchmarks/build_cuda.sh        ->  ganfast/_C.cpython-312-x86_64-linux-gnu.so
# The module is torch-free (raw pointers + the CUDA runtime linked statically), so it needs no torch here.
# Environment: PYTHON (the target interpreter, for its headers and ABI tag), CUDA_ARCHS (e.g. "90" or "80;90").
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-/root/.pyenv/versions/3.12.1/bin/python3.12}
archs=${CUDA_ARCHS:-90}
tag=$("$py" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
build="build/cuda-py${tag}-sm${archs//;/_}"
pybind11_dir=${PYBIND11_DIR:-$(python -m pybind11 --cmakedir)}  # header-only: any interpreter's pybind11 serves
cmake -S . -B "$build" -G Ninja -DGANFAST_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=$archs" -DPython_EXECUTABLE="$py" \
  -Dpybind11_DIR="$pybind11_dir" >/dev/null
cmake --build "$build"
so=$(ls "$build"/_C.cpython-"$tag"*.so)
cp "$so" ganfast/
echo "built ganfast/$(basename "$so") (CUDA archs $archs) in $build"

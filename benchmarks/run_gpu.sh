#!/usr/bin/env bash
# Build, test and benchmark ganfast on a GPU machine (torch, triton, pybind11, scikit-build-core and
# pytest-benchmark already installed, offline). Results land in benchmarks/results/<date>-<gpu>/ (or $OUT).
# Stages: `run_gpu.sh [build] [test] [bench]` (default: all three, in that order); on a machine that stays up
# between calls, each stage can run in its own call (the install persists). $TEST_ARGS / $BENCH_ARGS are passed
# to pytest (e.g. TEST_ARGS="tests/test_op_resources.py" to split the tests over calls).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
stages=${*:-build test bench}
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '_')
dest=${OUT:-benchmarks/results/$(date +%Y-%m-%d)-${gpu}}
mkdir -p "$dest"

if [[ " $stages " == *" build "* ]]; then
  pip install --no-build-isolation --no-deps . 2>&1 | tail -3
  {
    echo "gpu: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
    python -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
    echo "date: $(date -u +%FT%TZ)"
    ganfast info
  } | tee "$dest/env.txt"
fi
if [[ " $stages " == *" test "* ]]; then
  # shellcheck disable=SC2086
  pytest ${TEST_ARGS:-tests} -q -p no:cacheprovider --durations=15 -rs 2>&1 | tee -a "$dest/tests.log" | tail -30
fi
if [[ " $stages " == *" bench "* ]]; then
  # shellcheck disable=SC2086
  pytest ${BENCH_ARGS:-benchmarks} -q -p no:cacheprovider --benchmark-enable --benchmark-json "$dest/bench.json" \
    --benchmark-columns=median,iqr,ops 2>&1 | tee "$dest/bench.log" | tail -40
  python benchmarks/summarize.py "$dest/bench.json" | tee "$dest/SUMMARY.md"
fi

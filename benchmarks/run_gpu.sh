#!/usr/bin/env bash
# Build, test and benchmark ganfast on a GPU machine in one go (torch, triton, pybind11, scikit-build-core,
# pytest-benchmark already installed, offline). Results land in benchmarks/results/<date>-<gpu>/ (or $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '_')
dest=${OUT:-benchmarks/results/$(date +%Y-%m-%d)-${gpu}}
mkdir -p "$dest"

pip install --no-build-isolation --no-deps . 2>&1 | tail -3
{
  echo "gpu: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
  python -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
  echo "date: $(date -u +%FT%TZ)"
  ganfast info
} | tee "$dest/env.txt"

pytest tests -q -p no:cacheprovider 2>&1 | tee "$dest/tests.log" | tail -5
pytest benchmarks -q -p no:cacheprovider --benchmark-enable --benchmark-json "$dest/bench.json" \
  --benchmark-columns=median,iqr,ops 2>&1 | tail -40
python benchmarks/summarize.py "$dest/bench.json" | tee "$dest/SUMMARY.md"

#!/usr/bin/env bash
# The GPU runbook's device side (benchmarks/README.md has the whole sequence). Runs from the repository root on a
# machine with a CUDA GPU, Python, torch, triton, pytest, pytest-benchmark and hypothesis installed, and
# ganfast/_C.cpython-*.so built elsewhere by benchmarks/build_cuda.sh and carried along: nothing is compiled or
# installed here. Results go to ${OUT:+$OUT/}benchmarks/results/<date>-<gpu>/.
#
#   bash benchmarks/run_gpu.sh                 check, test, bench: fits one 8-minute command (each stage has its
#                                              own time limit, and a stage that fails does not stop the next)
#   bash benchmarks/run_gpu.sh sweep           the full benchmark suites (optional second command, <= 8 minutes)
#
# Stages: check  the device, versions and `ganfast info`; fails fast unless ganfast._C has CUDA kernels for it
#         test   the GPU-only checks: op resources (CUDA graph capture and replay, memory growth, two threads,
#                launch limits), each op's parity per dtype on the GPU (float64 against the reference,
#                float32/bfloat16/float16 within their tolerances) and the same seeds' samples byte-identical
#                across fresh processes on CUDA (tests/test_sample_processes.py)
#         bench  every op and whole D and G steps at two shapes each (GANFAST_BENCH=compact), then SUMMARY.md
#         sweep  every suite in full
# Limits (seconds) can be changed: CHECK_LIMIT, TEST_LIMIT, BENCH_LIMIT, SWEEP_LIMIT; TEST_K picks the op tests.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
stages=${*:-check test bench}
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' '_')
dest=${OUT:+$OUT/}benchmarks/results/$(date -u +%Y-%m-%d)-${gpu:-cpu}
mkdir -p "$dest"
status=0
OP_TESTS="tests/test_bias_act.py tests/test_upfirdn2d.py tests/test_conv2d_resample.py tests/test_modulated_conv2d.py
          tests/test_grad_penalty.py tests/test_sample_lerp.py tests/test_spectral_norm.py tests/test_filtered_lrelu.py
          tests/test_affine_sample.py tests/test_affine_resample.py tests/test_color_matrix.py tests/test_autocast.py"
# per-dtype parity of every op on the GPU (float64 against the reference, the others within their tolerances);
# torch.compile tests are left out (minutes of compilation), graph capture and threads are test_op_resources.py's
TEST_K=${TEST_K:-"(dtype or precision or half or float16 or float64) and not fullgraph"}

stage() {  # stage NAME LIMIT COMMAND...: runs COMMAND under LIMIT seconds, records the exit code
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  echo "== $name (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
  [[ $rc == 124 || $rc == 137 ]] && echo "== $name: stopped at its ${limit}s limit"
  echo "$name rc=$rc seconds=$(( $(date +%s) - start ))" | tee -a "$dest/status.txt"
  [[ $rc == 0 ]] || status=1
  return $rc
}

check() {
  {
    echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo none)"
    python -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
    echo "date: $(date -u +%FT%TZ)"
    python -m ganfast.cli info
  } 2>&1 | tee "$dest/env.txt"
  python - <<'PY'
import torch
from ganfast import _ext
if torch.cuda.is_available():
    device = torch.device("cuda")
    assert _ext.loaded(), _ext.LOAD_ERROR
    assert _ext.cuda_compiled(), "ganfast._C has no CUDA kernels: run benchmarks/build_cuda.sh and carry the .so"
    assert _ext.runs_on(device), f"ganfast._C was built for sm_{_ext._C.cuda_archs}, not for this GPU"
    print("check: CUDA kernels for", _ext._C.cuda_archs, "run on", torch.cuda.get_device_name(device))
else:
    print("check: no CUDA device here (a rehearsal): the stages run on the CPU with tiny shapes")
PY
}

run_tests() {
  # shellcheck disable=SC2086
  pytest tests/test_op_resources.py -q -p no:cacheprovider -rs --durations=10 --junitxml="$dest/tests-resources.xml" \
    2>&1 | tee "$dest/tests.log" | tail -15
  local rc=${PIPESTATUS[0]}
  # shellcheck disable=SC2086
  pytest $OP_TESTS -k "$TEST_K" -q -p no:cacheprovider -rs --durations=15 --junitxml="$dest/tests-ops.xml" \
    2>&1 | tee -a "$dest/tests.log" | tail -25
  local rc_ops=${PIPESTATUS[0]}
  # a seed's image is the same bytes in every process on CUDA too (cuDNN benchmark off, deterministic algorithms)
  pytest tests/test_sample_processes.py -q -p no:cacheprovider -rs --junitxml="$dest/tests-sample-processes.xml" \
    2>&1 | tee -a "$dest/tests.log" | tail -5
  [[ $rc == 0 && $rc_ops == 0 && ${PIPESTATUS[0]} == 0 ]]
}

# One pytest (and one JSON) per suite, the most telling first: a stage stopped at its time limit keeps the
# suites it finished.
SUITES=${SUITES:-"train_step bias_act upfirdn2d losses spectral_norm modulated_conv2d sample filtered_lrelu
                  affine_resample augment rosinality r3gan"}

run_bench() {  # run_bench NAME [pytest args...]: every suite, then SUMMARY-NAME.md over all their JSON files
  local name=$1 rc=0 suite
  shift
  for suite in $SUITES; do
    pytest "benchmarks/test_bench_$suite.py" -q -p no:cacheprovider --benchmark-enable \
      --benchmark-json "$dest/$name-$suite.json" --benchmark-columns=median,iqr,ops "$@" 2>&1 \
      | tee -a "$dest/$name.log" | tail -3
    [[ ${PIPESTATUS[0]} == 0 ]] || rc=1
    python benchmarks/summarize.py "$dest"/"$name"-*.json > "$dest/SUMMARY-$name.md"
  done
  return "$rc"
}

compact_bench() {
  GANFAST_BENCH=compact run_bench bench --benchmark-max-time=0.2 --benchmark-min-rounds=3
}

export dest OP_TESTS TEST_K SUITES
export -f check run_tests run_bench compact_bench
for s in $stages; do
  case $s in
    check) stage check "${CHECK_LIMIT:-90}" bash -c check || exit 1 ;;
    test) stage test "${TEST_LIMIT:-230}" bash -c run_tests ;;
    bench) stage bench "${BENCH_LIMIT:-160}" bash -c compact_bench ;;
    sweep) stage sweep "${SWEEP_LIMIT:-460}" bash -c "run_bench sweep" ;;
    *) echo "unknown stage $s (check, test, bench, sweep)"; exit 2 ;;
  esac
done
echo "results in $dest"; cat "$dest/status.txt"
exit $status

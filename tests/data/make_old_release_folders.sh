#!/usr/bin/env bash
# Makes tests/data/wartune-0.1.0-searches.tar.gz: four searches written by wartune 0.1.0 (the
# previous release, commit 262fc7a), each killed mid-run as a user's Ctrl-C or a lost node
# would leave it, for tests/test_manifest.py to resume with this release.
#
#   grid/    strategy grid, cnn-4, λ {1, 6, 12}, one trial at a time, killed once one finished
#   optuna/  strategy optuna (TPE, its study in optuna.db), 3 trials one at a time, likewise
#   war/     strategy war, cnn-4 and cnn-8 from the ζ registry entry of cnn-4 (zeta.parquet), likewise
#   pbt/     strategy pbt, population 2, 4 epochs, killed after both trained 2 epochs
#   zeta.parquet  the registry the war search reads (written by 0.1.0's ZetaRegistry)
#
# Digits, 2 epochs (PBT 4), PGD-3 training and PGD-5 evaluation on 90 test images: tiny nets,
# so the archive stays small. Ray's state inside names the absolute folder the searches ran
# in (here /tmp/wartune-0.1.0-searches/runs); the test unpacks them elsewhere, so resuming
# them also resumes moved folders. Run from the repository root, with the venv of the checkout:
#
#   tests/data/make_old_release_folders.sh [PYTHON]     (PYTHON: default .venv/bin/python)
set -euo pipefail
PYTHON=${1:-.venv/bin/python}
REPO=$(pwd)
OLD=/tmp/wartune-0.1.0-code
WORK=/tmp/wartune-0.1.0-searches
rm -rf "$WORK" && mkdir -p "$WORK/runs"
made_code=0
[ -d "$OLD" ] || { git worktree add --detach "$OLD" 262fc7a; made_code=1; }

common='{objective: trades, dataset: digits, batch_size: 128, attack: {eps: 0.2, step: 0.05, steps: 3},
  eval: {steps: 5, max_examples: 90}, resources: {cpu: 1, gpu: 0}, seed: 0}'
space() {  # NAME YAML: a space file merging the common settings
  PYTHONPATH=$OLD "$PYTHON" -c "import sys, yaml; c = yaml.safe_load(sys.argv[2]); c.update(yaml.safe_load(sys.argv[3])); c['name'] = sys.argv[1]; print(yaml.safe_dump(c))" \
    "$1" "$common" "$2" > "$WORK/$1.yaml"
}
space grid   '{strategy: grid, model: cnn-4, lambda: [1, 6, 12], epochs: 2, max_concurrent: 1}'
space optuna '{strategy: optuna, model: cnn-4, lambda: {low: 0.5, high: 12}, trials: 3, epochs: 2, max_concurrent: 1}'
space war    '{strategy: war, model: [cnn-4, cnn-8], zeta_from: cnn-4, epochs: 2, max_concurrent: 1}'
space pbt    '{strategy: pbt, model: cnn-4, lambda: {low: 0.5, high: 12, log: true}, trials: 2, epochs: 4,
               pbt: {interval: 1, quantile: 0.5, resample: 0.0}}'

PYTHONPATH=$OLD "$PYTHON" - "$WORK/runs/zeta.parquet" <<'EOF'
import sys
from wartune.results.zeta import ZetaEntry, ZetaRegistry
ZetaRegistry(sys.argv[1]).put(ZetaEntry(model="cnn-4", dataset="digits", objective="trades", eps=0.2, best_lambda=1.0,
    zeta=400.0, zeta_step_std=None, rob_acc=None, nat_acc=None, stability=None, search="by hand", source="calibrated",
    created_at="2026-11-30T00:00:00+00:00"))
EOF

kill_when() {  # NAME CONDITION: run the search with 0.1.0's code, SIGKILL its process group once CONDITION holds
  PYTHONPATH=$OLD "$PYTHON" - "$OLD" "$WORK/$1.yaml" "$WORK/runs" "$WORK/runs/$1" "$2" <<'EOF'
import os, signal, subprocess, sys, time
import psutil
import pyarrow.parquet as pq
code, space, out, folder, condition = sys.argv[1:]
argv = [sys.executable, "-m", "wartune.cli", "search", "--space", space, "--out", out, "--num-cpus", "2", "--no-mlflow"]
proc = subprocess.Popen(argv, cwd=code, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
deadline, trials = time.time() + 600, []
while time.time() < deadline and proc.poll() is None:
    try:
        trials = pq.read_table(f"{folder}/trials.parquet").to_pylist()
    except (OSError, ValueError):
        trials = []
    if trials and eval(condition):
        break
    time.sleep(0.05)
family = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
if proc.poll() is not None:
    sys.exit(f"{folder}: the search ended before it could be killed; run the script again")
os.killpg(proc.pid, signal.SIGKILL)
proc.wait()
for p in family:  # Ray's workers live in their own process groups
    try:
        p.kill()
    except psutil.Error:
        pass
time.sleep(2)
print(f"{folder}: killed with {[(t['trial_id'], t['status'], t['epochs']) for t in trials]}")
EOF
}
one_finished='any(t["status"] == "finished" for t in trials) and len(trials) >= 2'
kill_when grid "$one_finished"
kill_when optuna "$one_finished"
kill_when war "$one_finished"
kill_when pbt 'len(trials) == 2 and all(t["epochs"] >= 2 for t in trials) and all(t["status"] == "running" for t in trials)'

rm -f "$WORK"/runs/.*.lock "$WORK"/runs/*.lock  # the locks (flock files, empty) are no part of a search
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2026-11-30 00:00Z' \
    -czf "$REPO/tests/data/wartune-0.1.0-searches.tar.gz" -C "$WORK/runs" .
ls -l "$REPO/tests/data/wartune-0.1.0-searches.tar.gz"
rm -rf "$WORK"  # the test checks that resuming the folders elsewhere writes nothing where they were made
[ "$made_code" = 0 ] || git worktree remove --force "$OLD"

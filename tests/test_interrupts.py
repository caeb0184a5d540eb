"""An interrupted search says so: Ctrl-C to the terminal's group, a scheduler's SIGTERM and a closed
terminal's SIGHUP stop it at a safe point, with what finished, the command that continues it and
the shell's exit status; nothing recorded is lost and `--resume` trains no finished epoch again."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, wait_gone
from wartune import interrupts
from wartune.cli import resume_command
from wartune.interrupts import SearchInterrupted

SPACE = {"strategy": "grid", "model": "cnn-4", "lambda": [1, 6, 12], "epochs": 6, "attack": {"steps": 2},
         "eval": {"steps": 2, "max_examples": 30}, "resources": {"cpu": 1, "gpu": 0}, "max_concurrent": 1,
         "stack": 1, "seed": 0}  # fmt: skip


def test_the_first_stop_signal_asks_ray_to_stop_a_second_stops_at_once_and_none_cuts_the_close_short():
    asked = []
    before = signal.signal(signal.SIGUSR1, lambda signum, frame: asked.append(signum))  # Ray's stop, as in Tuner.fit
    try:
        with interrupts.on_stop_signals():
            assert signal.getsignal(signal.SIGTERM) is interrupts._handler and os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "1"
            interrupts._handler(signal.SIGTERM, None)
            assert asked == [signal.SIGUSR1] and interrupts.received() == signal.SIGTERM
            with pytest.raises(KeyboardInterrupt):
                interrupts._handler(signal.SIGINT, None)
            interrupts.settle()
            interrupts._handler(signal.SIGINT, None)  # Ray shutting down after the stop: left alone
            assert interrupts.received() == signal.SIGTERM  # the first one names the stop
        assert signal.getsignal(signal.SIGTERM) is not interrupts._handler  # the previous handlers are back
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        with interrupts.on_stop_signals(), pytest.raises(KeyboardInterrupt):  # outside Ray's loop: nothing to wait for
            interrupts._handler(signal.SIGHUP, None)
    finally:
        signal.signal(signal.SIGUSR1, before)


def test_the_statement_names_the_signal_its_exit_status_and_the_command_that_continues():
    assert [SearchInterrupted(s).exit_status for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)] == [130, 143, 129]
    assert str(SearchInterrupted(signal.SIGINT)) == "stopped by Ctrl-C (SIGINT)"
    assert resume_command(["search", "--space", "my grid.yaml", "--overwrite", "--epochs", "3"]) == (
        "wartune search --space 'my grid.yaml' --epochs 3 --resume"
    )
    assert resume_command(["compare", "--space", "table3", "--resume"]) == "wartune compare --space table3 --resume"
    assert resume_command(["evaluate", "runs/x/models/y"]) is None  # nothing to resume


def _start(argv: list[str], cwd: Path) -> subprocess.Popen:
    """A wartune command as its own process group (a terminal's foreground job), its output piped."""
    return subprocess.Popen([sys.executable, "-m", "wartune.cli", *argv], cwd=cwd, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


def _run_until(proc: subprocess.Popen, lines_with: str, count: int) -> list[str]:
    """Read the command's output until `count` lines contain `lines_with` (a state, not a time)."""
    seen, out = 0, []
    assert proc.stdout is not None
    for line in proc.stdout:
        out.append(line)
        seen += lines_with in line
        if seen == count:
            return out
    raise AssertionError("the command ended first:\n" + "".join(out))


GRACE_S = 30  # what a scheduler gives between SIGTERM and SIGKILL, at the least (Kubernetes: 30 s)


def _interrupt(proc: subprocess.Popen, signum: int, to_group: bool) -> tuple[int, list[str]]:
    """Send the signal (to the whole group, as a terminal's Ctrl-C does); the exit status and
    the rest of the output. The command and every process it started are gone within a
    scheduler's grace period (about 5 s here: the bound is the issue's, not a speed target)."""
    family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    (os.killpg if to_group else os.kill)(proc.pid, signum)
    rest, _ = proc.communicate(timeout=GRACE_S)  # raises TimeoutExpired past the grace period
    wait_gone(family, timeout=GRACE_S)
    return proc.returncode, rest.splitlines()


def _rows(folder: Path, table: str) -> list[dict]:
    return pq.read_table(folder / table).to_pylist()


def _search(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path, Path, Path]:
    space = tmp_path / "grid.yaml"
    space.write_text(yaml.safe_dump({**SPACE, "name": "grid"}))
    out = tmp_path / "runs"
    proc = _start(["search", "--space", str(space), "--out", str(out), "--num-cpus", "2", *extra], REPO)
    return proc, space, out, out / "grid"


def _resumed(command: str) -> subprocess.CompletedProcess:
    """The printed command, run as the user would (as `python -m wartune.cli`)."""
    return subprocess.run([sys.executable, "-m", "wartune.cli", *shlex.split(command)[1:]], cwd=REPO,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def _said(lines: list[str]) -> list[str]:
    assert not any("Traceback" in ln or "*** SIGTERM" in ln for ln in lines), lines  # no stack, no native dump
    return [ln for ln in lines if ln.startswith("wartune: ")]


def _continue_with(said: list[str]) -> str:
    return next(ln for ln in said if ln.startswith("wartune: continue it with: ")).removeprefix("wartune: continue it with: ")


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("signum", "to_group"), [(signal.SIGINT, True), (signal.SIGTERM, False), (signal.SIGHUP, False)], ids=["ctrl-c", "sigterm", "sighup"]
)
def test_a_stop_signal_ends_a_search_at_a_safe_point_records_it_and_says_how_to_resume(signum, to_group, tmp_path):
    proc, space, out, folder = _search(tmp_path, "--overwrite")
    _run_until(proc, " epoch ", 2)  # the first trial's second epoch is recorded
    code, lines = _interrupt(proc, signum, to_group)
    assert code == 128 + signum, "\n".join(lines)
    said = _said(lines)
    name = interrupts.signal_name(signum)
    assert any(ln.startswith(f"wartune: search interrupted by {name}: 0 of 3 trials finished,") for ln in said), said
    assert _continue_with(said) == f"wartune search --space {space} --out {out} --num-cpus 2 --resume"
    [trial] = _rows(folder, "trials.parquet")  # one at a time: the other two never started
    epochs = _rows(folder, "epochs.parquet")
    assert trial["status"] == "interrupted" and trial["epochs"] == len(epochs) >= 2
    assert "**This search is incomplete**" in (folder / "summary.md").read_text()
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("grid").experiment_id])
    assert {r.info.status for r in runs} == {"KILLED"} and len(runs) == 2  # the parent and the trial's run


@pytest.mark.e2e
def test_resume_after_ctrl_c_finishes_every_trial_and_trains_no_recorded_epoch_again(tmp_path):
    proc, _, _, folder = _search(tmp_path, "--no-mlflow")
    _run_until(proc, " epoch ", 2)
    code, lines = _interrupt(proc, signal.SIGINT, to_group=True)
    assert code == 130, "\n".join(lines)
    [trial] = _rows(folder, "trials.parquet")
    recorded = {(e["trial_id"], e["epoch"]): e for e in _rows(folder, "epochs.parquet")}
    resumed = _resumed(_continue_with(_said(lines)))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = {t["trial_id"]: t for t in _rows(folder, "trials.parquet")}
    assert len(trials) == 3 and {(t["status"], t["epochs"]) for t in trials.values()} == {("finished", 6)}
    # It went on from its last recorded epoch, or from the one after: an epoch that finished and
    # checkpointed while Ray stopped, before the driver recorded it, is reported again, not retrained.
    assert len(recorded) <= trials[trial["trial_id"]]["resumed_from_epoch"] <= len(recorded) + 1
    after = [(e["trial_id"], e["epoch"]) for e in _rows(folder, "epochs.parquet")]
    assert sorted(after) == sorted((t, epoch) for t in trials for epoch in range(1, 7))  # every epoch once, none lost
    after_rows = {(e["trial_id"], e["epoch"]): e for e in _rows(folder, "epochs.parquet")}
    assert all(after_rows[key] == row for key, row in recorded.items())  # what was recorded stands as it was


@pytest.mark.e2e
def test_sigterm_stops_a_compare_part_way_and_resume_finishes_every_part(tmp_path):
    space = tmp_path / "cmp.yaml"
    space.write_text(yaml.safe_dump({**SPACE, "name": "cmp", "strategy": "compare", "thin_model": "cnn-4", "model": ["cnn-8"],
                                     "lambda": [1, 6], "epochs": 4, "strategies": ["untuned", "grid", "war"]}))  # fmt: skip
    out = tmp_path / "runs"
    proc = _start(["compare", "--space", str(space), "--out", str(out), "--num-cpus", "2", "--no-mlflow"], REPO)
    shown = _run_until(proc, "cnn-8 λ=", 1)  # the calibration is done; the wide part trains
    headings = [line.strip() for line in shown if line.startswith("wartune: compare cmp, part")]
    assert headings == ["wartune: compare cmp, part 1 of 2: calibrate λ and ζ on cnn-4: 2 trials × 4 epochs",
                        "wartune: compare cmp, part 2 of 2: untuned, grid, war on cnn-8: 3 trials × 4 epochs"], shown  # fmt: skip
    assert all(line.startswith("[") for line in shown if " epoch " in line)  # each epoch's line: the part's count
    code, lines = _interrupt(proc, signal.SIGTERM, to_group=False)
    assert code == 143, "\n".join(lines)
    said = _said(lines)
    stop = next(ln for ln in said if ln.startswith("wartune: compare interrupted by SIGTERM: "))
    finished, total = (int(n) for n in stop.split(": ")[2].split(" trials finished")[0].split(" of "))
    assert finished < total, stop  # the part it stopped in had trials left
    command = _continue_with(said)
    assert command == f"wartune compare --space {space} --out {out} --num-cpus 2 --no-mlflow --resume"
    parts = [p for p in (out / "cmp").iterdir() if (p / "trials.parquet").is_file()]
    assert {t["status"] for p in parts for t in _rows(p, "trials.parquet")} <= {"finished", "interrupted"}  # none `running`
    resumed = _resumed(command)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = _rows(out / "cmp", "compare.parquet")
    assert {r["strategy"] for r in rows} == {"untuned", "grid", "war"}
    parts = [p for p in (out / "cmp").iterdir() if (p / "trials.parquet").is_file()]
    assert {(t["status"], t["epochs"]) for p in parts for t in _rows(p, "trials.parquet")} == {("finished", 4)}

"""A killed driver: its processes end, its lock goes with it, a second search of the same
name is refused while it runs, and a truncated checkpoint is stepped over on --resume."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from tests.conftest import cmdline, wait_gone, write_space
from tests.test_cli import _run
from tests.test_strategies import _search_in_background, _wait_for

pytestmark = pytest.mark.e2e


def _rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def test_running_search_refuses_a_second_and_leaves_nothing_behind_when_killed(tmp_path, capsys):
    space = write_space(tmp_path, epochs=4, max_concurrent=1, model="wrn10-0.5", **{"lambda": [1, 6, 12]})
    out = tmp_path / "runs"
    proc = _search_in_background(space, out)
    try:
        _wait_for(lambda: len(_rows(out / "tiny" / "epochs.parquet")) >= 1)
        family = psutil.Process(proc.pid).children(recursive=True)
        assert any("raylet" in cmdline(p) for p in family)  # it did start a local Ray
        code, _, err = _run(["search", "--space", str(space), "--out", str(out), "--no-mlflow", "--resume"], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in err
        assert "search 'tiny'" in lines[0] and f"is already running (pid {proc.pid} on " in lines[0]
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone, as a script's timeout does
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    wait_gone(family)

    code, _, err = _run(["search", "--space", str(space), "--out", str(out), "--no-mlflow", "--resume"], capsys)
    assert code == 0, err  # the killed driver's lock went with it
    trials = _rows(out / "tiny" / "trials.parquet")
    assert len(trials) == 3 and all(t["status"] == "finished" and t["epochs"] == 4 for t in trials)


def test_truncated_newest_checkpoint_resumes_from_the_one_before(tmp_path, capsys):
    space = write_space(tmp_path, epochs=4, model="wrn10-0.5", **{"lambda": [6]})
    out = tmp_path / "runs"
    folder = out / "tiny"
    proc = _search_in_background(space, out)
    try:
        _wait_for(lambda: len(_rows(folder / "epochs.parquet")) >= 2)
        family = psutil.Process(proc.pid).children(recursive=True)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    wait_gone(family)  # the trial's worker may still write a checkpoint until it is gone
    checkpoints = sorted(p.parent for p in (folder / "ray" / "tune").glob("*/checkpoint_*/trainer.pt"))
    assert len(checkpoints) >= 2
    newest, older = checkpoints[-1], checkpoints[-2]
    trainer_file = newest / "trainer.pt"
    trainer_file.write_bytes(trainer_file.read_bytes()[:1000])

    code, _, err = _run(["search", "--space", str(space), "--out", str(out), "--no-mlflow", "--resume"], capsys)
    assert code == 0, err
    (trial,) = _rows(folder / "trials.parquet")
    assert trial["status"] == "finished" and trial["epochs"] == 4
    assert trial["resume_note"].startswith(f"{newest.name} unreadable (")
    assert f"resumed from {older.name} (epoch {trial['resumed_from_epoch']})" in trial["resume_note"]
    assert trial["resume_note"] in err  # the log says it too
    assert [e["epoch"] for e in _rows(folder / "epochs.parquet")] == [1, 2, 3, 4]

"""A killed driver: its processes end, its lock goes with it, a second search of the same
name is refused while it runs; the killed search resumes in the folder it was moved to, and
a truncated checkpoint is stepped over on --resume."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest

from tests.conftest import (
    cmdline,
    kill_when,
    move_search,
    rows_of,
    search_in_background,
    wait_for,
    wait_gone,
    write_space,
)
from tests.test_cli import _run
from wartune.results.locks import check_unlocked
from wartune.results.zeta import ZetaEntry, ZetaRegistry

pytestmark = pytest.mark.e2e


def _finished_epochs(folder: Path) -> list[dict]:
    done = {t["trial_id"] for t in rows_of(folder, "trials.parquet") if t["status"] == "finished"}
    return [e for e in rows_of(folder) if e["trial_id"] in done]


def test_running_search_refuses_a_second_and_resumes_in_another_folder_when_killed(tmp_path, capsys):
    # A grid of three, one at a time: killed after the first finished, the rest not yet created.
    space = write_space(tmp_path, epochs=3, max_concurrent=1, model="wrn10-0.5", **{"lambda": [1, 6, 12]})
    out = tmp_path / "runs"
    proc = search_in_background(space, out)
    try:
        wait_for(lambda: any(t["status"] == "finished" for t in rows_of(out / "tiny", "trials.parquet")), every=0.1)
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
    check_unlocked(out / ".tiny.lock", "the killed search")  # its lock went with it

    folder = move_search(out / "tiny", tmp_path / "elsewhere")
    finished = _finished_epochs(folder)
    code, _, err = _run(["search", "--space", str(space), "--out", str(folder.parent), "--no-mlflow", "--resume"], capsys)
    assert code == 0, err
    trials = rows_of(folder, "trials.parquet")
    assert len(trials) == 3 and all(t["status"] == "finished" and t["epochs"] == 3 for t in trials)
    assert all(e in rows_of(folder) for e in finished)  # nothing retrained, nothing lost
    assert len(rows_of(folder)) == 9 and sorted(p.name for p in out.iterdir()) == [".tiny.lock"]  # nothing at the old place


def test_truncated_newest_checkpoint_of_a_moved_war_search_resumes_from_the_one_before(tmp_path, capsys):
    # WAR: λ_t is state, so the trial must continue from a checkpoint, not merely re-run.
    registry = tmp_path / "zeta.parquet"
    ZetaRegistry(registry).put(ZetaEntry(model="cnn-4", dataset="digits", objective="trades", eps=0.2, best_lambda=1.0, zeta=4.0,
                                         zeta_step_std=None, rob_acc=None, nat_acc=None, stability=None, search="by hand",
                                         source="calibrated", created_at="2026-11-30T00:00:00+00:00"))  # fmt: skip
    space = write_space(tmp_path, strategy="war", zeta_from="cnn-4", epochs=4, model="wrn10-0.5", **{"lambda": None})
    out = tmp_path / "runs"
    kill_when(space, out, lambda trials: trials[0]["epochs"] >= 2, "--registry", str(registry))
    folder = move_search(out / "tiny", tmp_path / "elsewhere")
    recorded = rows_of(folder)
    checkpoints = sorted(p.parent for p in (folder / "ray" / "tune").glob("*/checkpoint_*/trainer.pt"))
    assert len(checkpoints) >= 2
    newest, older = checkpoints[-1], checkpoints[-2]
    trainer_file = newest / "trainer.pt"
    trainer_file.write_bytes(trainer_file.read_bytes()[:1000])

    argv = ["search", "--space", str(space), "--out", str(folder.parent), "--no-mlflow", "--resume", "--registry", str(registry)]
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    (trial,) = rows_of(folder, "trials.parquet")
    assert trial["status"] == "finished" and trial["epochs"] == 4 and trial["zeta_used"] == 4.0
    assert trial["resume_note"].startswith(f"{newest.name} unreadable (")
    assert f"resumed from {older.name} (epoch {trial['resumed_from_epoch']})" in trial["resume_note"]
    assert trial["resume_note"] in err  # the log says it too
    epochs = rows_of(folder)
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4] and not (out / "tiny").exists()
    kept = [e for e in recorded if e["epoch"] <= trial["resumed_from_epoch"]]
    assert kept and all(e in epochs for e in kept)  # the epochs up to the checkpoint it went on from: as recorded


def _trial_finding_checkpoints_left_before_a_kill(config: dict) -> None:
    """A Ray trial whose folder holds checkpoints its experiment snapshot never registered."""
    import tempfile

    from ray import tune

    from wartune.tune.resume import storage_of_trial, trial_checkpoints

    fs, trial_path = storage_of_trial()
    for index in config["left"]:
        fs.create_dir(f"{trial_path}/checkpoint_{index:06d}")
    trial_checkpoints(None)  # where a trainable starts: it finds them, and numbers on after them
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "progress.json").write_text("{}")
        tune.report({"epoch": 1}, checkpoint=tune.Checkpoint.from_directory(folder))


def test_a_restarted_trial_names_its_checkpoints_after_those_its_folder_holds(tmp_path):
    # Ray numbers a restarted trial's checkpoints on from its lagging snapshot's index: without
    # resume.continue_numbering the trial's next checkpoint would be checkpoint_000000 again,
    # over one written before the kill (a PBT trial restored from that name loaded a later epoch).
    from ray import tune

    from wartune.tune.strategies import ray_session

    with ray_session(num_cpus=1):
        results = tune.Tuner(
            _trial_finding_checkpoints_left_before_a_kill,
            param_space={"left": tune.grid_search([(0, 1, 3), ()])},
            run_config=tune.RunConfig(storage_path=str(tmp_path), name="search"),
        ).fit()
    written = {tuple(r.config["left"]): Path(r.checkpoint.path).name for r in results}
    assert written == {(0, 1, 3): "checkpoint_000004", (): "checkpoint_000000"}


def test_a_trial_created_again_on_resume_finds_the_checkpoints_its_earlier_folder_holds(tmp_path):
    # A trial created after the driver's last experiment snapshot is created again on --resume,
    # same id, new folder (Ray names it by the time): its earlier folder's checkpoints are its own.
    import pyarrow.fs as pafs

    from wartune.tune.resume import checkpoint_paths, same_trial

    name = "adversarial_training_trial_fc4d2_00001_1_members=lam_0_0_seed_0_{}"
    first, second, now = (tmp_path / name.format(t) for t in ("2026-12-06_19-19-48", "2026-12-06_19-20-07", "2026-12-06_19-31-00"))
    other = tmp_path / "adversarial_training_trial_fc4d2_00002_2_members=lam_1_0_seed_0_2026-12-06_19-19-48"
    for folder, indexes in ((first, (0, 1)), (second, (0,)), (now, ()), (other, (0, 1, 2))):
        folder.mkdir()
        for i in indexes:
            (folder / f"checkpoint_{i:06d}").mkdir()
    paths = [Path(p).relative_to(tmp_path) for p in checkpoint_paths(pafs.LocalFileSystem(), str(now))]
    assert [str(p) for p in paths] == [f"{second.name}/checkpoint_000000", f"{first.name}/checkpoint_000001", f"{first.name}/checkpoint_000000"]
    assert same_trial(str(first), str(now)) and not same_trial(str(other), str(now))

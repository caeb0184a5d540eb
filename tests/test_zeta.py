"""The ζ registry: the paper's row, upserts, refusals, calibration, concurrent writers."""

import math
import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest

from wartune.engine.trainer import zeta_of
from wartune.errors import WartuneError
from wartune.results.zeta import PAPER_ENTRY, ZetaEntry, ZetaRegistry, best_trial_entry


def _entry(model="wrn10-0.5", dataset="digits", objective="trades", eps=0.2, zeta=10.0, lam=6.0, search="s",
           created_at="2026-01-01") -> ZetaEntry:  # fmt: skip
    return ZetaEntry(model, dataset, objective, eps, lam, zeta, 0.5, 0.6, 0.9, 0.7, search, "calibrated", created_at)


def test_zeta_is_the_ratio_of_epoch_means():
    assert zeta_of(1.5, 0.05) == pytest.approx(30.0)
    assert math.isnan(zeta_of(1.5, 0.0))


def test_paper_row_is_built_in(tmp_path):
    reg = ZetaRegistry(tmp_path / "zeta.parquet")
    e = reg.lookup("wrn34-0.5", "cifar10", "trades", 8 / 255)
    assert (e.best_lambda, e.zeta, e.source) == (6.0, 30.0, "paper") and e == PAPER_ENTRY


def test_put_then_lookup_and_upsert_replaces_same_key(tmp_path):
    reg = ZetaRegistry(tmp_path / "zeta.parquet")
    reg.put(_entry(zeta=10.0))
    reg.put(_entry(zeta=12.5))
    reg.put(_entry(objective="madry", zeta=3.0))
    assert reg.lookup("wrn10-0.5", "digits", "trades", 0.2).zeta == 12.5
    assert reg.lookup("wrn10-0.5", "digits", "madry", 0.2).zeta == 3.0
    assert len(reg.entries()) == 3  # paper + two


def test_another_searchs_calibration_is_kept_beside_and_a_lookup_must_name_one(tmp_path):
    # A user's calibration, then a compare's of the same thin net: compare overwrote the user's
    # ζ in 0.2.0 without a word (issue 28). Both stay; the run names which one it uses.
    reg = ZetaRegistry(tmp_path / "zeta.parquet")
    reg.put(_entry(zeta=161.47, search="calibrate-wrn10-0.5", created_at="2026-12-06T10:00:00+00:00"))
    reg.put(_entry(zeta=33.73, lam=6.0, search="table3/calibrate", created_at="2026-12-06T11:00:00+00:00"))
    reg.put(_entry(zeta=34.0, lam=6.0, search="table3/calibrate", created_at="2026-12-06T12:00:00+00:00"))  # resumed: its own replaced
    assert len(reg.entries()) == 3  # paper + the two searches'
    with pytest.raises(WartuneError, match=r"2 ζ calibrations of 'wrn10-0\.5' for digits, trades, ε 0\.2: "
                                           r"wrn10-0\.5@calibrate-wrn10-0\.5 \(ζ 161\.5.*wrn10-0\.5@table3/calibrate \(ζ 34"):
        reg.lookup("wrn10-0.5", "digits", "trades", 0.2)
    assert reg.lookup("wrn10-0.5@calibrate-wrn10-0.5", "digits", "trades", 0.2).zeta == 161.47
    assert reg.lookup("wrn10-0.5@table3/calibrate", "digits", "trades", 0.2).zeta == 34.0
    assert reg.lookup("wrn10-0.5@latest", "digits", "trades", 0.2).search == "table3/calibrate"
    with pytest.raises(WartuneError, match=r"no ζ for 'wrn10-0\.5' from search 'other' \(its searches: calibrate-wrn10-0\.5, table3/calibrate\)"):
        reg.lookup("wrn10-0.5@other", "digits", "trades", 0.2)
    reg.put(_entry(objective="madry", zeta=3.0, search="calibrate-wrn10-0.5"))
    assert reg.lookup("wrn10-0.5", "digits", "madry", 0.2).zeta == 3.0  # one calibration for that setting: no name needed


@pytest.mark.parametrize(
    "dataset,objective,eps", [("cifar10", "trades", 0.2), ("digits", "madry", 0.2), ("digits", "trades", 0.1)]
)
def test_mismatched_dataset_objective_or_eps_is_refused_unless_forced(tmp_path, dataset, objective, eps):
    reg = ZetaRegistry(tmp_path / "zeta.parquet")
    reg.put(_entry())
    with pytest.raises(WartuneError, match="--force"):
        reg.lookup("wrn10-0.5", dataset, objective, eps)
    assert reg.lookup("wrn10-0.5", dataset, objective, eps, force=True).zeta == 10.0


def test_missing_model_says_how_to_calibrate(tmp_path):
    with pytest.raises(WartuneError, match="wartune calibrate --model wrn16-1"):
        ZetaRegistry(tmp_path / "zeta.parquet").lookup("wrn16-1", "digits", "trades", 0.2)


def test_non_finite_zeta_is_never_stored(tmp_path):
    with pytest.raises(WartuneError):
        ZetaRegistry(tmp_path / "z.parquet").put(_entry(zeta=math.nan))


ROUNDS = 15  # upserts per writer


def _writer(path: Path, worker: int, reads: Any, waiting: Any, done: Any) -> None:
    """`ROUNDS` upserts, each held between its read and its write until the other writer has read
    as often, is blocked on a lock, or is done: with the registry's lock the other writer is
    blocked, without it both read the same table and the later write drops the other's row."""
    import fcntl

    other = 1 - worker
    real_rows, real_flock = ZetaRegistry._rows, fcntl.flock

    def flock(fd: Any, operation: int) -> None:
        if operation & fcntl.LOCK_EX and not operation & fcntl.LOCK_NB:
            waiting[worker] = 1  # from here until the lock is ours, we are blocked (or about to be)
            try:
                real_flock(fd, operation)
            finally:
                waiting[worker] = 0
        else:
            real_flock(fd, operation)

    def rows(self: ZetaRegistry) -> list[dict[str, Any]]:
        got = real_rows(self)
        reads[worker] += 1
        deadline = time.monotonic() + 120  # only a bound on a hang: the wait is for the other's state
        while not (reads[other] >= reads[worker] or waiting[other] or done[other]):
            if time.monotonic() > deadline:
                raise RuntimeError(f"writer {worker}: the other writer neither read nor waited for the lock")
            time.sleep(0.001)
        return got

    fcntl.flock, ZetaRegistry._rows = flock, rows  # in this child process only
    try:
        reg = ZetaRegistry(path)
        for i in range(ROUNDS):
            reg.put(_entry(model=f"mlp-{worker * 100 + i + 1}"))
    finally:
        done[worker] = 1


def test_two_processes_writing_at_once_lose_no_row(tmp_path: Path) -> None:
    """Two writers in lockstep, each waiting between its read and its write (`_writer`): the
    registry's lock alone keeps every row; without it each round loses one, every run."""
    path = tmp_path / "zeta.parquet"
    context = multiprocessing.get_context("spawn")
    reads, waiting, done = (context.Array("i", 2, lock=False) for _ in range(3))
    writers = [context.Process(target=_writer, args=(path, w, reads, waiting, done)) for w in (0, 1)]
    for p in writers:
        p.start()
    try:
        for p in writers:
            p.join(timeout=300)
    finally:
        for p in writers:
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in writers] == [0, 0]
    assert list(reads) == [ROUNDS, ROUNDS]
    models = {e.model for e in ZetaRegistry(path).entries()}
    assert len(models) == 2 * ROUNDS + 1  # every writer's rows and the paper's


def _trial(trial_id, lam, rob, model="wrn10-0.5", status="finished", zeta=8.0, test_rob=None):
    """A trial whose validation robust accuracy is `rob` (what chooses) and test one `test_rob` (reported)."""
    return {
        "trial_id": trial_id, "model": model, "dataset": "digits", "objective": "trades", "eps": 0.2,
        "lambda_setting": lam, "zeta": zeta, "zeta_step_std": 0.1, "val_rob_acc": rob, "val_nat_acc": 0.95,
        "val_stability": 0.75, "test_rob_acc": rob if test_rob is None else test_rob, "test_nat_acc": 0.9,
        "test_stability": 0.7, "status": status,
    }  # fmt: skip


def test_calibration_takes_the_best_finished_fixed_lambda_trial():
    # b leads on validation; a's test robust accuracy is higher, which never chooses; the entry keeps b's test figures
    trials = [_trial("a", 3.0, 0.5, test_rob=0.8), _trial("b", 6.0, 0.61, zeta=11.0, test_rob=0.58),
              _trial("c", 9.0, 0.7, status="failed"), _trial("d", None, 0.9)]  # fmt: skip
    e = best_trial_entry(trials, "grid")
    assert (e.best_lambda, e.zeta, e.rob_acc, e.search, e.source) == (6.0, 11.0, 0.58, "grid", "calibrated")
    assert (e.nat_acc, e.stability, e.zeta_step_std) == (0.9, 0.7, 0.1)
    # what the choice stood on: b's validation figure, the grid of the fixed-λ trials (the failed one's λ
    # was tried too), the trial's epochs and one seed
    assert (e.val_rob_acc, e.calibration_lambdas, e.calibration_seeds) == (0.61, "3,6,9", 1)


def test_calibration_needs_a_model_when_the_search_had_several():
    trials = [_trial("a", 3.0, 0.5), _trial("b", 6.0, 0.6, model="wrn10-2")]
    with pytest.raises(WartuneError, match="--model"):
        best_trial_entry(trials, "sweep")
    assert best_trial_entry(trials, "sweep", "wrn10-2").best_lambda == 6.0


def test_a_zeta_from_a_net_at_chance_accuracy_is_doubted():
    # a 3-epoch calibration at chance (10 % on ten classes) stored its ζ without a word in 0.2.0
    from dataclasses import replace

    from wartune.results.zeta import doubt

    at_chance = replace(_entry(zeta=161.47, search="calibrate-wrn10-0.5"), nat_acc=0.10)
    assert doubt(at_chance, 10) == (
        "ζ 161.5 of wrn10-0.5@calibrate-wrn10-0.5 comes from a net at chance accuracy (natural 10.0 %, chance 10.0 %): "
        "it says nothing about a trained net; calibrate with more epochs"
    )
    assert doubt(replace(at_chance, nat_acc=0.149), 10) is not None and doubt(replace(at_chance, nat_acc=0.15), 10) is None
    assert doubt(replace(at_chance, nat_acc=0.10), 2) is not None and doubt(replace(at_chance, nat_acc=None), 10) is None

"""Strategies end to end: Optuna (+ ASHA), width sweep, compare, fractional GPUs,
resume after SIGKILL, and trial failures — through real Ray, Optuna and Parquet."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pyarrow.parquet as pq
import pytest

from tests.conftest import (
    clearly_best,
    kill_search,
    kill_when,
    move_search,
    search_in_background,
    wait_for,
    write_choice_space,
    write_space,
)
from tests.test_cli import _run
from wartune.engine.config import TrainConfig
from wartune.engine.evaluation import eval_seed, evaluate_model
from wartune.engine.validation import carve_validation
from wartune.results.model_files import load_model
from wartune.results.report import summary_markdown, width_blocks
from wartune.results.trials import best_epoch_row, best_trial, decode_flags

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[1]


def _trials(folder: Path) -> list[dict]:
    return pq.read_table(folder / "trials.parquet").to_pylist()


def _epochs(folder: Path) -> list[dict]:
    return pq.read_table(folder / "epochs.parquet").to_pylist()


def _ray_results(folder: Path) -> list[dict]:
    """Every result Ray logged for the search's trials (result.json), as the trainable reported it."""
    return [json.loads(line) for path in (folder / "ray" / "tune").glob("*/result.json") for line in path.read_text().splitlines()]


def _search(capsys, space: Path, out: Path, *extra: str) -> str:
    """`wartune search` without MLflow (tested on its own in test_tracking)."""
    code, stdout, err = _run(["search", "--space", str(space), "--out", str(out), "--no-mlflow", *extra], capsys)
    assert code == 0, err
    return stdout


def test_optuna_search_samples_lambda_in_range_with_its_budget(tmp_path, capsys):
    space = write_space(tmp_path, strategy="optuna", trials=3, max_concurrent=2, scheduler="asha", epochs=2,
                        **{"lambda": {"low": 0.5, "high": 12, "log": True}})  # fmt: skip
    _search(capsys, space, tmp_path / "runs")
    trials = _trials(tmp_path / "runs" / "tiny")
    assert len(trials) == 3 and {t["strategy"] for t in trials} == {"optuna"}
    assert all(0.5 <= t["lambda_setting"] <= 12 for t in trials)
    assert len({t["lambda_setting"] for t in trials}) == 3
    assert all(t["status"] in ("finished", "stopped") for t in trials)


def test_nsga2_search_from_the_objectives_flag_marks_its_front_in_parquet_and_mlflow(tmp_path, capsys):
    """A whole multi-objective search with NSGA-II, its objectives given on the command line
    with their directions, logged to MLflow: six trials, a population of four, so the last is
    bred from the first generation; every trial run carries its front mark as tags."""
    import optuna
    from mlflow.tracking import MlflowClient

    from wartune.results.pareto import pareto_mask
    from wartune.results.tracking import default_tracking_uri
    from wartune.tune.study import NSGAIISampler

    space = write_space(tmp_path, strategy="optuna", trials=6, max_concurrent=2, epochs=1, model="cnn-8",
                        **{"lambda": {"low": 0.5, "high": 24, "log": True}})  # fmt: skip
    out = tmp_path / "runs"
    argv = ["search", "--space", str(space), "--out", str(out), "--num-cpus", "2", "--objectives", "rob_acc:max,nat_acc", "--sampler", "nsga2"]
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    folder = out / "tiny"
    trials = _trials(folder)
    assert len(trials) == 6 and all(t["status"] == "finished" for t in trials)
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder / 'optuna.db'}")
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE] * 2
    sampler = NSGAIISampler(population_size=4)  # the sampler the search ran, asked through Optuna's public API
    assert max(sampler.get_trial_generation(study, tr) for tr in study.trials) == 1  # a bred generation
    told = {tr.params["lam"]: tr.values for tr in study.trials if tr.state == optuna.trial.TrialState.COMPLETE}
    # the study is told each trial's best-epoch validation figures, never its test ones, and the
    # front is judged on the same validation columns
    assert told == {t["lambda_setting"]: [t["val_rob_acc"], t["val_nat_acc"]] for t in trials}
    assert [t["pareto"] for t in trials] == pareto_mask([(t["val_rob_acc"], t["val_nat_acc"]) for t in trials])
    assert {t["pareto_by"] for t in trials} == {"rob_acc,nat_acc"}
    summary = (folder / "summary.md").read_text().split("## Trade-off front")[1]
    assert all((t["trial_id"] in summary) == t["pareto"] for t in trials)
    assert (folder / "plots" / "pareto_front.png").stat().st_size > 10_000
    client = MlflowClient(default_tracking_uri(out))
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    marks = {r.data.params["trial_id"]: (r.data.tags["pareto"], r.data.tags["pareto_by"]) for r in runs if "trial_id" in r.data.params}
    assert marks == {t["trial_id"]: (str(t["pareto"]).lower(), "rob_acc,nat_acc") for t in trials}


def test_finished_trials_report_their_best_weights_on_the_whole_split(war_search, digits):
    # eval.max_examples 90: each epoch attacks the first 90 of the 216 validation images (held
    # out of digits' 1,437 training images), which choose the best epoch; the trial's test
    # figures are its exported best weights attacked once on all 360 test images, seeded as
    # that epoch was.
    folder = war_search["folder"]
    epochs = _epochs(folder)
    reported: dict[str, dict[int, list[float]]] = {}  # each trial's λ_t of every step, by epoch (steps.parquet)
    for r in sorted(pq.read_table(folder / "steps.parquet").to_pylist(), key=lambda r: r["step"]):
        reported.setdefault(r["trial_id"], {}).setdefault(r["epoch"], []).append(r["lambda_t"])
    for trial in _trials(folder):
        rows = sorted((r for r in epochs if r["trial_id"] == trial["trial_id"]), key=lambda r: r["epoch"])
        assert [r["epoch"] for r in rows] == [1, 2] and {r["val_examples"] for r in rows} == {90}
        best = rows[trial["best_epoch"] - 1]
        assert best is best_epoch_row(rows) and trial["selected_on"] == "validation"  # the best by val_rob_acc
        val = ("val_nat_acc", "val_rob_acc", "val_stability", "val_examples")
        assert [trial[k] for k in val] == [best[k] for k in val]
        assert [trial[f"final_val_{k}"] for k in ("nat_acc", "rob_acc", "stability")] == [
            rows[-1][f"val_{k}"] for k in ("nat_acc", "rob_acc", "stability")
        ]
        model, meta = load_model(folder / trial["checkpoint"])
        assert meta["epoch"] == trial["best_epoch"] and [meta[k] for k in val] == [best[k] for k in val]
        config = TrainConfig.model_validate(meta["train_config"])
        seed = eval_seed(config.seed, meta["epoch"])
        # the best epoch's figures again: the exported weights on the first 90 validation images
        held_out, _ = carve_validation(digits, config.validation)
        again = evaluate_model(model, held_out, config.eval_pgd(), seed, 90, split="validation")
        assert (again.nat_acc, again.rob_acc, again.stability, again.n) == (
            best["val_nat_acc"], best["val_rob_acc"], best["val_stability"], 90,
        )  # fmt: skip
        direct = evaluate_model(model, digits, config.eval_pgd(), seed)  # the whole test split
        assert (trial["test_nat_acc"], trial["test_rob_acc"], trial["test_stability"], trial["test_examples"]) == (
            direct.nat_acc, direct.rob_acc, direct.stability, 360,
        )  # fmt: skip
        assert trial["test_lipschitz"] == pytest.approx(direct.lipschitz, rel=1e-5)
        assert (trial["precision"], trial["graphs"]) == ("fp32", "off")  # CPU: graphs auto is off
        assert trial["war_skipped_steps"] == sum(r["war_skipped_steps"] for r in rows)
        war = trial["lambda_setting"] is None
        assert trial["lambda_settled_epoch"] == (_settled_by_hand(reported[trial["trial_id"]]) if war else None)
    summary = " ".join(summary_markdown("tiny", _trials(folder)).split())
    assert "chosen on validation" in summary and "on 90 validation images" in summary and "(360 images)" in summary


def _settled_by_hand(lambdas: dict[int, list[float]], tolerance: float = 0.1) -> int | None:
    """When WAR's λ_t settled, worked out here from every step's λ_t (steps.parquet), not from
    the epoch rows' min and max as the sink does: the first epoch from which each later step
    lies within `tolerance` of the last step's λ_t; None when the last epoch strays."""
    epochs = sorted(lambdas)
    final = lambdas[epochs[-1]][-1]
    in_band = [all(abs(lam - final) <= tolerance * abs(final) for lam in lambdas[e]) for e in epochs]
    return next((e for i, e in enumerate(epochs) if all(in_band[i:])), None)


@pytest.fixture(scope="module")
def width_sweep(tmp_path_factory) -> dict:
    """`wartune search` of a small grid whose choices stand clear (`CHOICE_SPACE`), as a user runs
    it: two widths (cnn-8, cnn-16) × λ {0, 6}, 3 epochs, each epoch evaluated on up to 300
    validation images (digits holds out 216). λ = 6 is each width's best by far, and cnn-16's the
    search's best. Its folder and stdout."""
    root = tmp_path_factory.mktemp("width_sweep")
    space = write_choice_space(root, model=["cnn-8", "cnn-16"], eval={"steps": 5, "max_examples": 300})
    argv = [sys.executable, "-m", "wartune.cli", "search", "--space", str(space), "--out", str(root / "runs"), "--no-mlflow"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return {"folder": root / "runs" / "tiny", "out": done.stdout}


@pytest.mark.xdist_group("width_sweep")  # one worker builds the module's search once
def test_width_sweep_prints_table1_blocks(width_sweep):
    summary = (width_sweep["folder"] / "summary.md").read_text()
    for title in ("robust", "natural", "stability", "best λ per width"):
        assert f"### {title}" in summary and title in width_sweep["out"]
    assert "width 8" in summary and "width 16" in summary


@pytest.mark.xdist_group("width_sweep")
def test_a_grid_search_chooses_on_validation_and_reads_the_whole_test_split_once(width_sweep):
    """Every trial chose on the validation split (at most its 216 images) and read the 360
    test images once, whose flags it keeps; the starred trial is the best by validation."""
    folder = width_sweep["folder"]
    trials = _trials(folder)
    assert len(trials) == 4 and {t["status"] for t in trials} == {"finished"}
    assert {e["val_examples"] for e in _epochs(folder)} == {min(300, 216)}
    for t in trials:
        assert (t["selected_on"], t["val_examples"], t["test_examples"]) == ("validation", min(300, 216), 360)
        for split in ("val", "test"):
            for figure in ("nat_acc", "rob_acc", "stability"):
                assert t[f"{split}_{figure}_lo"] <= t[f"{split}_{figure}"] <= t[f"{split}_{figure}_hi"], (split, figure)
        robust, correct = decode_flags(t["test_robust"], 360), decode_flags(t["test_correct"], 360)
        # the flags are the figures' examples (the figures are float32 means of them)
        assert robust.sum() == round(t["test_rob_acc"] * 360) and robust.mean() == pytest.approx(t["test_rob_acc"], abs=1e-6)
        assert correct.sum() == round(t["test_nat_acc"] * 360) and correct.mean() == pytest.approx(t["test_nat_acc"], abs=1e-6)
        assert not (robust & ~correct).any()  # robust means correct, and not moved by the attack
    # the choices, each far beyond noise (`clearly_best`): the search's best trial, starred, and each width's best λ
    best = clearly_best(trials)
    assert best_trial(trials) == best and (best["model"], best["lambda_setting"]) == ("cnn-16", 6)
    assert [clearly_best([t for t in trials if t["model"] == m])["lambda_setting"] for m in ("cnn-8", "cnn-16")] == [6, 6]
    summary = (folder / "summary.md").read_text()
    assert [t["trial_id"] for t in trials if f"| {t['trial_id']} ★ |" in summary] == [best["trial_id"]]
    assert f"Best trial **{best['trial_id']}**" in summary and "chosen on validation" in summary
    best_lambdas = summary.split("### best λ per width")[1].strip().split("\n\n")[0].splitlines()[-1]
    assert [cell.strip() for cell in best_lambdas.strip("|").split("|")] == ["6", "6"]


def test_width_blocks_by_hand():
    # the cells show the test figures; the star (best λ per width) follows validation, which
    # here ranks each width's λ the other way round than its test figures do
    def t(lam, width, val_rob, rob):
        return {"lambda_setting": lam, "width": width, "val_rob_acc": val_rob, "test_rob_acc": rob, "test_nat_acc": 0.9,
                "test_stability": 0.8, "status": "finished"}  # fmt: skip

    blocks = width_blocks([t(1, 1, 0.55, 0.5), t(6, 1, 0.45, 0.6), t(1, 2, 0.5, 0.7), t(6, 2, 0.6, 0.4)])
    titles = [b[0] for b in blocks]
    assert titles == ["robust", "natural", "stability", "best λ per width"]
    robust = blocks[0][2]
    assert robust == [["1", "50.00 ★", "70.00"], ["6", "60.00", "40.00 ★"]]
    assert blocks[1][2] == [["1", "90.00 ★", "90.00"], ["6", "90.00", "90.00 ★"]]
    assert blocks[3][2] == [["1", "6"]]


def test_compare_runs_every_strategy_per_width_and_seed_with_cost(tmp_path, capsys):
    # one wide model keeps it short (the table's per-width grouping is tested in test_seeds)
    space = write_space(tmp_path, strategy="compare", thin_model="cnn-4", model=["cnn-8"], epochs=1,
                        war_variants={"thin": {"lambda0": "thin"}}, **{"lambda": [1, 6]})  # fmt: skip
    argv = ["compare", "--space", str(space), "--out", str(tmp_path / "runs"), "--no-mlflow", "--seeds", "2"]
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    root = tmp_path / "runs" / "tiny"
    rows = pq.read_table(root / "compare.parquet").to_pylist()
    strategies = ("untuned", "grid", "optuna", "pbt", "war", "war-thin")
    cells = [(s, "cnn-8", seed) for s in strategies for seed in (0, 1)]
    assert sorted((r["strategy"], r["model"], r["seed"]) for r in rows) == sorted(cells)  # a row per cell and seed
    calibration = _trials(root / "calibrate")
    assert sorted((t["lambda_setting"], t["seed"]) for t in calibration) == [(1, 0), (1, 1), (6, 0), (6, 1)]
    wide = _trials(root / "grid-untuned-war")
    for r in rows:
        calib_cost = sum(t["device_seconds"] for t in calibration if t["seed"] == r["seed"])
        sampled = root / f"{r['strategy']}-{r['model']}-seed{r['seed']}"
        if r["strategy"] in ("optuna", "pbt"):
            own = _trials(sampled)
            assert len(own) == 2 and {t["seed"] for t in own} == {r["seed"]}  # the grid's budget, this seed
            assert r["strategy"] == "pbt" or (sampled / "optuna.db").is_file()  # each Optuna part keeps its study
        elif r["strategy"] == "untuned":  # the thin net's best λ is in the grid: the grid's run at it
            own = [t for t in wide if t["strategy"] == "grid" and t["model"] == r["model"] and t["seed"] == r["seed"]
                   and t["lambda_setting"] == r["lambda_final"]]  # fmt: skip
            assert len(own) == 1
        else:
            own = [t for t in wide if t["strategy"] == r["strategy"] and t["model"] == r["model"] and t["seed"] == r["seed"]]
        assert r["device_seconds"] == pytest.approx(sum(t["device_seconds"] for t in own))
        expected_calib = calib_cost if r["strategy"] in ("untuned", "war", "war-thin") else 0.0
        assert r["calibration_seconds"] == pytest.approx(expected_calib)
        grid = next(g for g in rows if g["strategy"] == "grid" and (g["model"], g["seed"]) == (r["model"], r["seed"]))
        assert r["cost_vs_grid"] == pytest.approx(r["total_seconds"] / grid["total_seconds"])
        best = next(t for t in [*wide, *(_trials(sampled) if sampled.is_dir() else [])] if t["trial_id"] == r["best_trial"])
        assert (r["lambda_settled_epoch"], best["seed"]) == (best["lambda_settled_epoch"], r["seed"])
        figures = ("val_rob_acc", "test_nat_acc", "test_rob_acc", "test_rob_acc_lo", "test_rob_acc_hi", "test_stability")
        assert [r[k] for k in figures] == [best[k] for k in figures]
        assert r["test_rob_acc_lo"] <= r["test_rob_acc"] <= r["test_rob_acc_hi"]
        # against the grid's best trial of the seed, on the same 360 test images (paired)
        grid_best = next(t for t in wide if t["trial_id"] == grid["best_trial"])
        if r["strategy"] == "grid":
            assert (r["rob_vs_grid"], r["rob_vs_grid_lo"], r["rob_vs_grid_hi"]) == (None, None, None)
        else:
            assert r["rob_vs_grid"] == pytest.approx(best["test_rob_acc"] - grid_best["test_rob_acc"], abs=1e-6)
            assert r["rob_vs_grid_lo"] <= r["rob_vs_grid"] <= r["rob_vs_grid_hi"]
        assert r["strategy"].startswith("war") or r["lambda_settled_epoch"] is None
    assert not any(t["strategy"] == "untuned" for t in wide)  # not trained twice
    md = (root / "compare.md").read_text()
    assert "mean ± sd over seeds 0, 1" in md and "## Every seed" in md and "calibration counted once" in md
    # the grid's test robust accuracy over the two seeds: their mean with its Student-t 95 % interval,
    # t(0.975, 1) × sd / √2, where sd = |a - b| / √2, clipped to [0, 1]
    a, b = (r["test_rob_acc"] for r in rows if (r["strategy"], r["model"]) == ("grid", "cnn-8"))
    mean, half = (a + b) / 2, 12.706204736 * abs(a - b) / 2
    grid_md = next(line for line in md.splitlines() if line.startswith("| cnn-8 | grid | "))
    lo, hi = max(mean - half, 0.0), min(mean + half, 1.0)  # a proportion's interval, kept inside [0, 1]
    assert f" {100 * mean:.1f} ({100 * lo:.1f}–{100 * hi:.1f}) |" in grid_md
    assert md.count("| cnn-8 |") == 6 + 12  # mean rows, then every seed
    # `report` on the compare folder rebuilds compare.md (0.2.0 left it missing) and each part's summary
    (root / "compare.md").unlink()
    (root / "calibrate" / "summary.md").unlink()
    code, out, err = _run(["report", str(root)], capsys)
    assert code == 0, err
    assert (root / "compare.md").read_text() == md and (root / "calibrate" / "summary.md").is_file()


def _max_overlap(trials: list[dict]) -> int:
    """The most trials whose [started_at, ended_at] (stamped by their workers) cover one instant."""
    events = sorted([(t["started_at"], 1) for t in trials] + [(t["ended_at"], -1) for t in trials])
    now = best = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def test_fractional_gpus_pack_trials_on_a_declared_gpu(tmp_path):
    """Ray gives each trial its quarter of the one GPU and so runs four at once, never five.

    Left alone, how many overlap depends on how fast the workers start (on a busy machine
    they stagger), so each trial's worker is stopped (SIGSTOP) once it has reported its first
    of three epochs: the trials Ray started keep their share until four of them hold the GPU
    at once, then all go on, and the fifth waits its turn. A quarter CPU per trial on 2 CPUs:
    the GPU share, not the CPUs, is what limits them."""
    share, most = 0.25, 4
    space = write_space(tmp_path, epochs=3, **{"lambda": [1, 2, 3, 4, 5]})
    out = tmp_path / "runs"
    folder = out / "tiny"
    proc = search_in_background(space, out, "--gpus-per-trial", str(share), "--num-gpus", "1", "--cpus-per-trial", "0.25")
    held: dict[str, psutil.Process] = {}

    def most_hold_the_gpu() -> bool:
        assert proc.poll() is None, "the search ended before its trials could be held"
        for t in _trials(folder):
            if t["status"] == "running" and t["trial_id"] not in held:
                worker = _trial_worker(proc, folder, t["trial_id"])
                if worker is not None:
                    worker.suspend()
                    held[t["trial_id"]] = worker
        return len(held) >= most

    try:
        wait_for(most_hold_the_gpu, every=0.1)
    finally:
        for worker in held.values():
            try:
                worker.resume()
            except psutil.Error:
                pass
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            kill_search(proc)
    assert proc.returncode == 0
    trials = _trials(folder)
    assert len(trials) == most + 1 and all(t["status"] == "finished" and t["gpus"] == share for t in trials)
    results = _ray_results(folder)
    assert {r["trial_id"] for r in results} == {t["trial_id"] for t in trials}
    assert {r["gpus_assigned"] for r in results} == {share}  # what Ray reserved, as the trial saw it
    # the held trials ran at once (each stopped mid-run: its last report came after all were held),
    # and Ray never started more than its GPU holds
    assert _max_overlap(trials) == most
    # no real GPU here: the trainable ran on CPU and is charged for its CPU share
    assert all(t["device"] == "cpu" and t["device_seconds"] == pytest.approx(0.25 * t["wall_seconds"]) for t in trials)


def test_killed_optuna_search_resumes_in_another_folder_keeping_its_trials_and_study(tmp_path, capsys):
    """SIGKILL at once after a trial finished (Ray may not have registered it yet), then the
    folder moves to another parent, as from scratch to project storage, and resumes there.
    NSGA-II: the sampler Ray must unpickle from tuner.pkl and the searcher's saved state (TPE's
    pickles are pinned in test_study)."""
    space = write_space(tmp_path, strategy="optuna", trials=3, max_concurrent=1, epochs=3, model="wrn10-0.5",
                        sampler="nsga2", **{"lambda": {"low": 0.5, "high": 12}})  # fmt: skip
    out = tmp_path / "runs"
    kill_when(space, out, lambda trials: any(t["status"] == "finished" for t in trials) and len(trials) >= 2)
    folder = move_search(out / "tiny", tmp_path / "elsewhere")
    before = _trials(folder)
    finished_before = {t["trial_id"]: t for t in before if t["status"] == "finished"}
    epochs_before = [e for e in _epochs(folder) if e["trial_id"] in finished_before]
    assert finished_before

    _search(capsys, space, folder.parent, "--resume", "--num-cpus", "2")
    assert not (out / "tiny").exists()  # nothing went back to the old place
    after = _trials(folder)
    ids = [t["trial_id"] for t in after]
    assert len(ids) == len(set(ids)) == 3
    assert all(t["status"] == "finished" and t["epochs"] == 3 for t in after)
    # finished trials were not retrained: their epoch rows are exactly as before
    assert [e for e in _epochs(folder) if e["trial_id"] in finished_before] == epochs_before
    for t in after:
        if t["trial_id"] in finished_before:
            assert t["lambda_setting"] == finished_before[t["trial_id"]]["lambda_setting"]
    checkpoints = [p for p in (folder / "ray" / "tune").glob("*/checkpoint_*")]
    # every trial's checkpoints in the new place (a trial Ray had started but not yet recorded
    # when killed is started afresh under a new id; its old folder stays, unused)
    assert set(ids) <= {p.parent.name.split("_")[3] for p in checkpoints}
    # the Optuna study came back with the earlier trials: the one study in optuna.db, every
    # finished trial told its best epoch's validation robust accuracy
    import optuna

    storage = f"sqlite:///{folder / 'optuna.db'}"
    assert optuna.get_all_study_names(storage) == ["tiny"]
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert len(study.trials) >= len(before)
    told = {tr.params["lam"]: tr.value for tr in study.trials if tr.state == optuna.trial.TrialState.COMPLETE}
    assert told == {t["lambda_setting"]: t["val_rob_acc"] for t in after}


def _trial_worker(proc: subprocess.Popen, folder: Path, trial_id: str) -> psutil.Process | None:
    """The Ray worker running the trial now: the pid its latest result in Ray's result.json
    names, if that process is one this search started (never another's, nor a reused pid)."""
    pids = [r["pid"] for r in _ray_results(folder) if r["trial_id"] == trial_id]
    family = psutil.Process(proc.pid).children(recursive=True)
    return next((p for p in family if pids and p.pid == pids[-1]), None)


def test_crashed_trial_is_retried_from_its_checkpoint(tmp_path, capsys):
    """A trial's worker dies mid-run, as on a lost node: Ray retries the trial, which goes on
    from its checkpoint. The kill waits for the trial's second epoch row: Ray holds a trial's
    next training step until it has registered the checkpoint its last report saved, so a
    second epoch means the first epoch's checkpoint is registered."""
    # wrn10-1 epochs take about a second: after the second, three more leave the kill time to land
    space = write_space(tmp_path, model="wrn10-1", epochs=5, max_concurrent=1, **{"lambda": [1, 6]})
    out = tmp_path / "runs"
    folder = out / "tiny"
    proc = search_in_background(space, out)
    found: dict[str, Any] = {}

    def second_epoch_and_its_worker() -> bool:
        assert proc.poll() is None, "the search ended before its worker could be killed"
        running = [t for t in _trials(folder) if t["status"] == "running" and t["epochs"] >= 2]
        if running:
            found["victim"] = running[0]["trial_id"]
            found["worker"] = _trial_worker(proc, folder, running[0]["trial_id"])
        return found.get("worker") is not None

    try:
        wait_for(second_epoch_and_its_worker, every=0.1)
        found["worker"].kill()
        assert proc.wait(timeout=300) == 0
    finally:
        if proc.poll() is None:
            kill_search(proc)
    trials = {t["trial_id"]: t for t in _trials(folder)}
    assert all(t["status"] == "finished" and t["epochs"] == 5 for t in trials.values())
    assert trials[found["victim"]]["restarts"] == 1
    assert trials[found["victim"]]["resumed_from_epoch"] >= 1  # continued from a checkpoint, not from scratch


def test_diverging_trial_is_marked_failed_while_the_others_finish(tmp_path, capsys):
    space = write_space(tmp_path, epochs=2, **{"lambda": [1, 1e30]})
    _search(capsys, space, tmp_path / "runs")
    trials = {t["lambda_setting"]: t for t in _trials(tmp_path / "runs" / "tiny")}
    assert trials[1.0]["status"] == "finished" and trials[1.0]["epochs"] == 2
    assert trials[1e30]["status"] == "failed" and "diverged" in trials[1e30]["error"]


def test_asha_stops_the_trials_that_lag_at_a_rung_and_lets_the_best_train_on():
    # The search's ASHA (Ray's own), fed the epochs a search reports: eight trials, 8 epochs,
    # so rungs at epochs 2 and 4 (grace a quarter of the epochs, halving). Trials arrive in
    # order of rising validation robust accuracy, then the worst of them come again: at a rung, a trial
    # below the best half of those recorded there stops; the best trains on.
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    from wartune.tune.spaces import SearchSpace
    from wartune.tune.strategies import trial_scheduler

    space = SearchSpace.model_validate({"strategy": "grid", "model": "cnn-8", "lambda": [1, 2], "epochs": 8, "scheduler": "asha"})
    asha = trial_scheduler(space)
    assert (asha._time_attr, asha._metric, asha._mode, asha._max_t) == ("epoch", "val_rob_acc", "max", 8)
    trials = [Trial("adversarial_training_trial", config={}, trial_id=f"t_{i}", stub=True) for i in range(8)]
    for trial in trials:
        asha.on_trial_add(None, trial)
    decisions = {t.trial_id: asha.on_trial_result(None, t, {"epoch": 2, "val_rob_acc": 0.1 * (i + 1)}) for i, t in enumerate(trials)}
    # each arrives better than all before it: none lags, all go on
    assert set(decisions.values()) == {TrialScheduler.CONTINUE}
    late = [Trial("adversarial_training_trial", config={}, trial_id=f"late_{i}", stub=True) for i in range(3)]
    for trial, rob in zip(late, (0.05, 0.95, 0.6), strict=True):
        asha.on_trial_add(None, trial)
        decisions[trial.trial_id] = asha.on_trial_result(None, trial, {"epoch": 2, "val_rob_acc": rob})
    assert decisions["late_0"] == TrialScheduler.STOP  # worse than every trial at the rung
    assert decisions["late_1"] == TrialScheduler.CONTINUE  # the best at the rung
    assert decisions["late_2"] == TrialScheduler.CONTINUE  # in the best half (halving), not the best quarter
    assert asha.on_trial_result(None, trials[-1], {"epoch": 8, "val_rob_acc": 0.9}) == TrialScheduler.STOP  # max_t: done

"""End to end through the CLI: real Ray, real Parquet; bad input exits 2 with one line."""

import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from tests.conftest import write_space
from wartune.cli import main
from wartune.results.model_files import load_model
from wartune.results.store import EPOCH_SCHEMA, STEP_SCHEMA, TRIAL_SCHEMA
from wartune.tune.compare import COLUMNS, compare_markdown, compare_table


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
        raise SystemExit(0)
    captured = capsys.readouterr()
    return exit_info.value.code or 0, captured.out, captured.err


@pytest.mark.e2e
def test_search_writes_both_parquet_tables_with_declared_schema(tiny_space, tmp_path, capsys):
    code, out, err = _run(["search", "--space", str(tiny_space), "--out", str(tmp_path / "runs"), "--num-cpus", "2"], capsys)
    assert code == 0, err
    folder = tmp_path / "runs" / "tiny"
    epochs = pq.read_table(folder / "epochs.parquet")
    trials = pq.read_table(folder / "trials.parquet")
    steps = pq.read_table(folder / "steps.parquet")
    assert epochs.schema.equals(EPOCH_SCHEMA) and trials.schema.equals(TRIAL_SCHEMA) and steps.schema.equals(STEP_SCHEMA)
    assert epochs.num_rows == 4 and trials.num_rows == 2
    rows = trials.to_pylist()
    assert sorted(r["lambda_setting"] for r in rows) == [1.0, 6.0]
    assert all(r["status"] == "finished" and r["epochs"] == 2 for r in rows)
    assert all(r["device_seconds"] == pytest.approx(r["wall_seconds"]) for r in rows)  # 1 CPU each
    # trials × epochs × ceil(1221 / 128): digits' 1,437 training images less the 216 held out for validation
    assert steps.num_rows == 2 * 2 * 10
    for r in rows:
        model, meta = load_model(folder / r["checkpoint"])
        assert meta["val_rob_acc"] == pytest.approx(r["val_rob_acc"]) and meta["epoch"] == r["best_epoch"]
        assert (meta["val_examples"], r["val_examples"], r["test_examples"], r["selected_on"]) == (90, 90, 360, "validation")
    assert (folder / "summary.md").read_text().count("| ") > 2
    assert "★" in out and "natural" in out


def _error_line(code: int, err: str) -> str:
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("wartune: error: ")
    return lines[0]


@pytest.mark.parametrize(
    "changes,extra,expected",
    [
        ({}, ["--space", "no_such_space"], "unknown search space 'no_such_space'"),
        ({"lamda": [1]}, [], "unknown key 'lamda'"),
        ({"lambda": [6, -3]}, [], "lambda.1: Input should be greater than or equal to 0"),
        ({"attack": {"eps": 0}}, [], "attack.eps: Input should be greater than 0"),
        ({"epochs": 0}, [], "epochs: Input should be greater than or equal to 1"),
        ({}, ["--model", "resnet9"], "unknown model 'resnet9'; known families"),
        ({}, ["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        ({}, ["--dataset", "mnist", "--model", "smallcnn"], "dataset 'mnist' loads from a local folder: pass --data-dir"),
        ({}, ["--dataset", "mnist", "--model", "smallcnn", "--data-dir", "/no/such/folder"], "--data-dir '/no/such/folder' is not a folder"),
        ({}, ["--model", "smallcnn"], "model 'smallcnn' needs images of at least 16 pixels; this dataset's are 8"),
        ({}, ["--dataset", "cifar10"], "dataset 'cifar10' loads from a local folder: pass --data-dir"),
        ({}, ["--lambdas", "6,x"], "--lambdas: expected comma-separated numbers"),
        ({}, ["--epochs", "many"], "Invalid value for '--epochs'"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, changes, extra, expected):
    space = write_space(tmp_path, **changes)
    out = tmp_path / "runs"
    argv = ["search", "--space", str(space), "--out", str(out), *extra]
    if "--space" in extra:
        argv = ["search", "--out", str(out), *extra]
    code, _, err = _run(argv, capsys)
    assert expected in _error_line(code, err)
    assert not out.exists()


def test_console_script_exit_status_and_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "wartune.cli", "search", "--space", "nope", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip().startswith("wartune: error: unknown search space")


@pytest.mark.e2e
def test_existing_search_folder_is_not_overwritten_silently(tiny_space, tmp_path, capsys):
    folder = tmp_path / "runs" / "tiny"
    folder.mkdir(parents=True)
    (folder / "trials.parquet").write_text("earlier results")
    code, _, err = _run(["search", "--space", str(tiny_space), "--out", str(tmp_path / "runs")], capsys)
    assert "already holds a search" in _error_line(code, err)
    assert (folder / "trials.parquet").read_text() == "earlier results"


@pytest.mark.parametrize(
    "earlier,extra,expected",
    [
        (None, ["--resume"], "nothing to resume in"),
        ("earlier results", [], "already holds a search"),
    ],
)
def test_compare_checks_its_folder_before_anything_runs(tmp_path, capsys, earlier, extra, expected):
    space = write_space(tmp_path, strategy="compare", thin_model="cnn-4", model=["cnn-8"])
    root = tmp_path / "runs" / "tiny"
    if earlier is not None:
        root.mkdir(parents=True)
        (root / "compare.parquet").write_text(earlier)
    code, _, err = _run(["compare", "--space", str(space), "--out", str(tmp_path / "runs"), *extra], capsys)
    assert expected in _error_line(code, err)
    assert earlier is None or (root / "compare.parquet").read_text() == earlier


def test_compare_terminal_and_markdown_tables_share_their_rows():
    # each strategy's best trial: its test figures with their intervals, and (beside the grid) its
    # paired difference to the grid's best on the same test images
    rows = [
        {"model": "cnn-8", "strategy": "grid", "seed": 0, "lambda_final": 6.0, "lambda_settled_epoch": None, "val_rob_acc": 0.5,
         "test_nat_acc": 0.9, "test_rob_acc": 0.41234, "test_rob_acc_lo": 0.36, "test_rob_acc_hi": 0.46, "rob_vs_grid": None,
         "rob_vs_grid_lo": None, "rob_vs_grid_hi": None, "test_stability": None, "trials": 2, "total_seconds": 12.4,
         "cost_vs_grid": 1.0},
        {"model": "cnn-8", "strategy": "war", "seed": 0, "lambda_final": 5.5, "lambda_settled_epoch": 7, "val_rob_acc": 0.3,
         "test_nat_acc": 0.8, "test_rob_acc": 0.4, "test_rob_acc_lo": 0.35, "test_rob_acc_hi": 0.45, "rob_vs_grid": -0.01234,
         "rob_vs_grid_lo": -0.05, "rob_vs_grid_hi": 0.03, "test_stability": 0.7, "trials": 1, "total_seconds": 6.0,
         "cost_vs_grid": None},
    ]  # fmt: skip
    table = compare_table(rows)
    assert table[0] == ["cnn-8", "grid", "6.00", "–", "90.00", "41.2 (36.0–46.0)", "–", "–", "–", "1", "2", "12", "1.00"]
    assert table[1][3:7] == ["epoch 7", "80.00", "40.0 (35.0–45.0)", "-1.2 (-5.0 to +3.0)"] and table[1][-1] == "–"
    calibration = {"model": "cnn-4", "best_lambda": 6.0, "zeta": 2.5, "seconds": 3.0}
    md = compare_markdown("c", rows, calibration, {"untuned": 1.0, "grid": 12.4, "optuna": 0.0, "war": 6.0})
    for row in table:
        assert "| " + " | ".join(row) + " |" in md
    assert "| " + " | ".join(COLUMNS) + " |" in md
    assert "- war on cnn-8: -1.2 (-5.0 to +3.0) points of test robust accuracy against the grid's best λ: within noise." in md


@pytest.mark.e2e
def test_a_search_on_synthetic_data_needs_no_folder_and_says_its_figures_are_chance(tmp_path, capsys):
    # synthetic MNIST: 60,000 random 28x28 images in memory, no --data-dir; 256 of them trained on
    space = write_space(tmp_path, dataset="synthetic-mnist", model="cnn-4", epochs=1, train_examples=256,
                        attack={"steps": 1}, eval={"steps": 1, "max_examples": 64}, **{"lambda": [3]})  # fmt: skip
    code, out, err = _run(["search", "--space", str(space), "--out", str(tmp_path / "runs"), "--num-cpus", "1", "--no-mlflow"], capsys)
    assert code == 0, err
    folder = tmp_path / "runs" / "tiny"
    (row,) = pq.read_table(folder / "trials.parquet").to_pylist()
    assert row["dataset"] == "synthetic-mnist" and row["status"] == "finished"
    # each epoch on the first 64 of 5,000 held-out training images; the test split read whole once
    assert (row["selected_on"], row["val_examples"], row["test_examples"]) == ("validation", 64, 10_000)
    assert "Synthetic data (synthetic-mnist: random images and labels)" in (folder / "summary.md").read_text()
    assert "random images and labels" in " ".join(out.split())  # the terminal table's caption


@pytest.mark.e2e
def test_resume_with_other_settings_is_refused_naming_each_and_the_same_settings_resume(tmp_path, capsys):
    # A finished 2-epoch search: --epochs 3 and another grid would be ignored by Ray's pickled
    # experiment, so they are refused in one line; --data-dir may change (the data moved too).
    space = write_space(tmp_path)
    out = tmp_path / "runs"
    code, _, err = _run(["search", "--space", str(space), "--out", str(out), "--no-mlflow"], capsys)
    assert code == 0, err
    before = (out / "tiny" / "trials.parquet").read_bytes()
    code, _, err = _run(["search", "--space", str(space), "--out", str(out), "--no-mlflow", "--resume", "--epochs", "3",
                         "--lambdas", "1,6,12"], capsys)  # fmt: skip
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "changes epochs 2 → 3; lambda [1.0, 6.0] → [1.0, 6.0, 12.0]:" in lines[0]
    assert (out / "tiny" / "trials.parquet").read_bytes() == before  # nothing ran
    code, _, err = _run(["search", "--space", str(space), "--out", str(out), "--no-mlflow", "--resume",
                         "--data-dir", str(tmp_path)], capsys)  # fmt: skip
    assert code == 0, err


@pytest.mark.e2e
def test_a_calibration_at_chance_accuracy_is_named_and_its_zeta_doubted(tmp_path, capsys):
    """Issue 28: 0.2.0 stored the ζ of a net that had learned nothing, and reported its 100 %
    stability, without a word. With lr 1e-6 for one epoch the nets stay at chance (about 10 %)."""
    space = write_space(tmp_path, model="cnn-4", epochs=1, lr=1e-6)
    code, _, err = _run(["calibrate", "--model", "cnn-4", "--space", str(space), "--out", str(tmp_path / "runs"), "--no-mlflow"], capsys)
    assert code == 0, err
    warnings = [ln for ln in err.splitlines() if ln.startswith("wartune: warning: ")]
    assert any("2 trial(s) ended at chance natural accuracy" in w for w in warnings), warnings
    assert any("comes from a net at chance accuracy" in w and "says nothing about a trained net" in w for w in warnings), warnings

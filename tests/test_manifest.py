"""A search folder records the release that wrote it: an older folder is upgraded on --resume
(its tables filled in and rewritten, one line says so), a newer one refused in one line.

The end-to-end test resumes four searches that wartune 0.1.0 wrote and that were killed
mid-run (grid, Optuna, WAR, PBT; tests/data/make_old_release_folders.sh made them), unpacked
elsewhere than where they ran, so they are moved folders too.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import optuna
import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import rows_of, write_space
from tests.test_cli import _error_line, _run
from wartune import __version__
from wartune.results.manifest import MANIFEST_FILE, RENAMED, upgrade, written_by
from wartune.results.store import (
    ADDED_COLUMNS,
    EPOCH_SCHEMA,
    EPOCHS_FILE,
    RENAMED_EPOCH_COLUMNS,
    SCHEMA_VERSION,
    TRIAL_SCHEMA,
    TRIALS_FILE,
    read_rows,
)
from wartune.tune.ray_pickles import stored_root
from wartune.tune.study import OPTUNA_FILE

OLD_RELEASE = Path(__file__).parent / "data" / "wartune-0.1.0-searches.tar.gz"
# What `upgrade` says of a 0.1.0 folder: both tables renamed to schema 4's val_* / test_* names,
# and the columns added since (trials.parquet: selected_on, val_examples, the 12 interval columns,
# the two flag columns, graphs, stack, wartune_version, the five tuned settings) filled with their empty values.
UPGRADED = (f"was written by wartune 0.1.0 or before (schema 1); upgraded for wartune {__version__} (schema {SCHEMA_VERSION}): "
            f"trials.parquet {RENAMED[TRIALS_FILE]}; trials.parquet gained 24 columns (selected_on, val_examples, val_nat_acc_lo, ...) "
            f"(empty: null); epochs.parquet {RENAMED[EPOCHS_FILE]}; epochs.parquet gained stack (empty: null)")  # fmt: skip


def _older_folder(folder: Path) -> dict[str, list[dict]]:
    """The tables of wartune 0.1.0's grid search (tests/data), as it wrote them, with no manifest:
    its finished trial's figures on the whole test split (metrics_from full_split), the one it
    was running the best epoch's. Their rows, as written."""
    folder.mkdir(exist_ok=True)
    with tarfile.open(OLD_RELEASE) as archive:
        for name in (TRIALS_FILE, EPOCHS_FILE):
            data = archive.extractfile(f"./grid/{name}")
            assert data is not None
            (folder / name).write_bytes(data.read())
    return {name: rows_of(folder, name) for name in (TRIALS_FILE, EPOCHS_FILE)}


def test_an_older_folder_is_renamed_gains_the_new_columns_empty_and_this_releases_manifest(tmp_path):
    old = _older_folder(tmp_path)
    assert not written_by(tmp_path).recorded
    line = upgrade(tmp_path)
    assert line == f"{str(tmp_path)!r} {UPGRADED}"
    assert pq.read_table(tmp_path / TRIALS_FILE).schema.equals(TRIAL_SCHEMA, check_metadata=False)
    assert pq.read_table(tmp_path / EPOCHS_FILE).schema.equals(EPOCH_SCHEMA, check_metadata=False)
    rows = read_rows(tmp_path / TRIALS_FILE, TRIAL_SCHEMA)
    assert [r["trial_id"] for r in rows] == [t["trial_id"] for t in old[TRIALS_FILE]]
    for row, was in zip(rows, old[TRIALS_FILE], strict=True):
        assert row["graphs"] is None and row["wartune_version"] is None and row["status"] == was["status"]
        assert row["selected_on"] == "test"  # 0.1.0 chose each best epoch on the test split
        # the best epoch's per-epoch figures (on the test split then) become the val_* columns
        for figure in ("nat_acc", "rob_acc", "stability"):
            assert (row[f"val_{figure}"], row[f"final_val_{figure}"]) == (was[f"best_epoch_{figure}"], was[f"final_{figure}"])
        # the whole-split figures of a finished trial become its test result; a trial that had not
        # finished has none (0.1.0's nat_acc... were then the best epoch's figures again)
        full = was["metrics_from"] == "full_split"
        assert full == (was["status"] == "finished")
        test = {k: row[f"test_{k}"] for k in ("nat_acc", "rob_acc", "stability", "lipschitz", "examples")}
        assert test == {k: was[k if k != "examples" else "eval_examples"] if full else None for k in test}
        assert "metrics_from" not in row and "rob_acc" not in row
    assert [e for e in read_rows(tmp_path / EPOCHS_FILE, EPOCH_SCHEMA)] == [
        {**{RENAMED_EPOCH_COLUMNS.get(k, k): v for k, v in e.items()}, "stack": None} for e in old[EPOCHS_FILE]
    ]
    assert json.loads((tmp_path / MANIFEST_FILE).read_text()) == {
        "wartune_version": __version__,
        "schema_version": SCHEMA_VERSION,
    }
    assert upgrade(tmp_path) is None  # this release wrote it now: nothing to say


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (
            {"wartune_version": "9.0.0", "schema_version": 9},
            f"was written by wartune 9.0.0 (schema 9), newer than this wartune {__version__}",
        ),
        (
            {"wartune_version": __version__, "schema_version": SCHEMA_VERSION + 1},
            "newer than this wartune",
        ),
        ({"wartune": "0.2.0"}, "is not a wartune manifest (wartune_version, schema_version)"),
        ({"wartune_version": "soon", "schema_version": 2}, "'soon' is not a wartune release"),
    ],
)
def test_resuming_a_folder_of_a_newer_release_or_a_broken_manifest_is_one_line(
    tmp_path, capsys, manifest, message
):
    space = write_space(tmp_path)
    folder = tmp_path / "runs" / "tiny"
    (folder / "ray" / "tune").mkdir(parents=True)
    (folder / "ray" / "tune" / "tuner.pkl").write_bytes(b"")  # a search was started here
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, _, err = _run(
        ["search", "--space", str(space), "--out", str(folder.parent), "--resume", "--no-mlflow"],
        capsys,
    )
    assert message in _error_line(code, err)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def _ran_in(experiment: Path) -> str | None:
    """Where Ray's state says the search ran: its storage root (`<folder>/ray`)."""
    states = [
        *experiment.glob("basic-variant-state-*.json"),
        *experiment.glob("search_gen_state-*.json"),
    ]
    return stored_root(states[0].read_bytes())


def _finished_epochs(folder: Path) -> list[dict]:
    done = {t["trial_id"] for t in rows_of(folder, TRIALS_FILE) if t["status"] == "finished"}
    return [e for e in rows_of(folder) if e["trial_id"] in done]


def _extract(archive_path: Path, into: Path) -> None:
    """Unpack a tar of plain files and folders below `into`, checked member by member:
    tarfile's own `filter="data"` arrived in Python 3.11.4 and the project claims 3.11.0."""
    with tarfile.open(archive_path) as archive:
        members = archive.getmembers()
        escaping = [
            m.name
            for m in members
            if not (m.isfile() or m.isdir()) or Path(m.name).is_absolute() or ".." in Path(m.name).parts
        ]
        assert not escaping, escaping
        archive.extractall(into, members=members)


@pytest.mark.e2e
def test_searches_the_previous_release_left_half_done_resume_with_this_one(tmp_path, capsys):
    from wartune.tune.strategies import ray_session

    runs = tmp_path / "runs"
    runs.mkdir()
    _extract(OLD_RELEASE, runs)
    names = ("grid", "optuna", "war", "pbt")
    made_in = {name: _ran_in(runs / name / "ray" / "tune") for name in names}
    finished = {name: _finished_epochs(runs / name) for name in names}
    for name in names:  # each was killed mid-run
        assert any(t["status"] != "finished" for t in rows_of(runs / name, TRIALS_FILE)), name

    with ray_session(num_cpus=2):  # one Ray for the four resumes
        for name in names:
            space = runs / name / "space.yaml"
            argv = ["search", "--space", str(space), "--out", str(runs), "--resume", "--no-mlflow"]
            code, _, err = _run(argv, capsys)
            assert code == 0, err
            upgrades = [line for line in err.splitlines() if line.startswith("wartune: warning:") and " was written by " in line]
            assert upgrades == [f"wartune: warning: {str(runs / name)!r} {UPGRADED}"]  # once (the tiny nets also draw chance warnings)

    for name in names:
        folder = runs / name
        epochs = yaml.safe_load((folder / "space.yaml").read_text())["epochs"]
        trials = rows_of(folder, TRIALS_FILE)
        # written back in this release's schema, every trial finished with all its epochs
        assert pq.read_table(folder / TRIALS_FILE).schema.equals(TRIAL_SCHEMA, check_metadata=False)
        assert trials and {(t["status"], t["epochs"]) for t in trials} == {("finished", epochs)}
        assert {t["wartune_version"] for t in trials} <= {None, __version__}
        # 0.1.0 began them all: every trial goes on choosing on the test split as it did then (its
        # val_* figures are the test split's first 90 images), and a finished one read all 360 once
        assert {t["selected_on"] for t in trials} == {"test"}, name
        assert {(t["val_examples"], t["test_examples"]) for t in trials if t["val_examples"] is not None} == {(90, 360)}, name
        # nothing retrained, nothing lost (each 0.1.0 row kept as it was, under schema 4's names,
        # beside the columns added since, which hold their empty values); nothing written where the search ran
        now = rows_of(folder)
        renamed = [{RENAMED_EPOCH_COLUMNS.get(k, k): v for k, v in e.items()} for e in finished[name]]
        assert all({**e, **{k: ADDED_COLUMNS[k] for k in now[0].keys() - e.keys()}} in now for e in renamed), name
        assert made_in[name] is not None and not Path(made_in[name]).exists()
        assert json.loads((folder / MANIFEST_FILE).read_text())["wartune_version"] == __version__
    # 0.1.0's study, continued: every trial told its best_rob_acc. 0.1.0 told the trial it
    # finished its whole-split figure (now its test_rob_acc); this release tells each trial it
    # finished the best epoch's figure (val_rob_acc: for these trials, on the test split's first 90)
    study = optuna.load_study(
        study_name="optuna", storage=f"sqlite:///{runs / 'optuna' / OPTUNA_FILE}"
    )
    done = [tr for tr in study.trials if tr.state == optuna.trial.TrialState.COMPLETE]
    told = {tr.params["lam"]: tr.value for tr in done}
    by_old = {e["trial_id"] for e in finished["optuna"]}
    assert by_old and told == {
        t["lambda_setting"]: t["test_rob_acc"] if t["trial_id"] in by_old else t["val_rob_acc"]
        for t in rows_of(runs / "optuna", TRIALS_FILE)
    }

"""The Parquet store: steps appended per trial and epoch, atomic writes, one-line errors."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wartune.errors import WartuneError
from wartune.results.model_files import (
    META_FILE,
    WEIGHTS_FILE,
    copy_model_files,
    load_model,
    save_model_files,
)
from wartune.results.sinks import ParquetSink
from wartune.results.store import (
    EPOCH_SCHEMA,
    EPOCHS_FILE,
    STEP_SCHEMA,
    STEPS_FILE,
    TRIAL_SCHEMA,
    TRIALS_FILE,
    read_rows,
    step_file,
    upgrade_steps_file,
    write_table,
)
from wartune.results.trials import FULL_SPLIT_RESULT, TrialMeta

_case = itertools.count()


def _meta(trial_id: str) -> TrialMeta:
    return TrialMeta(
        search="s", trial_id=trial_id, strategy="grid", model="cnn-4", width=4.0, dataset="digits",
        objective="trades", eps=0.2, seed=0, epochs_planned=3, lambda_setting=1.0, zeta_from=None,
        zeta_used=None, cpus=1.0, gpus=0.0,
    )  # fmt: skip


def _result(epoch: int, steps: int, offset: float = 0.0) -> dict[str, Any]:
    """One epoch's report as the trainable sends it: metrics plus the per-step trace."""
    result: dict[str, Any] = {name: 0.5 for name in EPOCH_SCHEMA.names}
    result.update(epoch=epoch, eval_examples=30, war_skipped_steps=1)
    result["steps"] = {
        "l_nat": [offset + i for i in range(steps)],
        "l_rob": [1.0] * steps,
        "lambda_t": [offset + epoch] * steps,
    }
    return result


def _steps(folder: Path) -> list[dict[str, Any]]:
    table = pq.read_table(folder / STEPS_FILE)
    assert table.schema.equals(STEP_SCHEMA)
    return table.to_pylist()


def test_each_epoch_appends_one_file_and_leaves_earlier_ones_alone(tmp_path):
    sink = ParquetSink(tmp_path)
    sink.on_epoch(_meta("a_00000"), _result(1, 5))
    first = step_file(tmp_path, "a_00000", 1)
    stamp = first.stat().st_mtime_ns, first.stat().st_ino
    for epoch in (2, 3):
        for trial in ("a_00000", "b_00001"):
            sink.on_epoch(_meta(trial), _result(epoch, 5))
    sink.on_epoch(_meta("b_00001"), _result(1, 5))
    assert (first.stat().st_mtime_ns, first.stat().st_ino) == stamp  # appended, not rewritten
    assert sorted(p.name for p in (tmp_path / STEPS_FILE).iterdir()) == [
        f"{t}-e000{e}.parquet" for t in ("a_00000", "b_00001") for e in (1, 2, 3)
    ]
    assert not hasattr(sink, "steps")  # the step rows live on disk only
    rows = _steps(tmp_path)
    assert len(rows) == 2 * 3 * 5
    assert [(r["trial_id"], r["epoch"], r["step"]) for r in rows] == sorted(
        (t, e, s) for t in ("a_00000", "b_00001") for e in (1, 2, 3) for s in range(5)
    )
    frame = pd.read_parquet(tmp_path / STEPS_FILE)
    assert list(frame.columns) == STEP_SCHEMA.names and len(frame) == len(rows)
    assert pa.Table.from_pandas(frame, preserve_index=False).cast(STEP_SCHEMA).to_pylist() == rows


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    reports=st.lists(
        st.tuples(st.sampled_from(["a_00000", "b_00001", "c_00002"]), st.integers(1, 4), st.integers(0, 6)),
        min_size=1,
        max_size=12,
    ),
    orphans=st.sets(st.sampled_from(["a_00000", "b_00001", "c_00002"])),
)
def test_steps_hold_the_last_report_of_each_trial_epoch(tmp_path, reports, orphans):
    """Re-reported epochs (a resume) replace their rows; forget_except drops an orphan's files."""
    folder = tmp_path / f"case{next(_case)}"
    sink = ParquetSink(folder)
    expected: dict[tuple[str, int], tuple[int, float]] = {}
    for i, (trial, epoch, steps) in enumerate(reports):
        sink.on_epoch(_meta(trial), _result(epoch, steps, offset=i))
        expected[(trial, epoch)] = (steps, float(i))
    restarted = ParquetSink(folder)  # a restarted driver, as at the end of a resumed experiment
    restarted.forget_except({t for t, _ in expected} - orphans)
    restarted.close()
    kept = {k: v for k, v in expected.items() if k[0] not in orphans}
    rows = _steps(folder) if (folder / STEPS_FILE).exists() else []
    assert [(r["trial_id"], r["epoch"], r["step"], r["l_nat"]) for r in rows] == [
        (t, e, s, offset + s) for (t, e), (n, offset) in sorted(kept.items()) for s in range(n)
    ]
    assert {r["trial_id"] for r in read_rows(folder / "epochs.parquet", EPOCH_SCHEMA)} == {t for t, _ in kept}


def test_a_single_file_steps_table_of_an_older_search_is_upgraded(tmp_path):
    rows = [
        {"search": "s", "trial_id": t, "epoch": e, "step": s, "l_nat": 1.0, "l_rob": 2.0, "lambda_t": float(e)}
        for t in ("b_00001", "a_00000") for e in (2, 1) for s in range(3)
    ]  # fmt: skip
    write_table(rows, STEP_SCHEMA, tmp_path / STEPS_FILE)
    ParquetSink(tmp_path).on_epoch(_meta("a_00000"), _result(3, 3))  # a resumed search appends
    got = _steps(tmp_path)
    assert len(got) == len(rows) + 3 and sorted(map(str, rows)) == sorted(map(str, [r for r in got if r["epoch"] < 3]))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    upgrade_steps_file(tmp_path)  # nothing left to do
    assert len(_steps(tmp_path)) == len(got)


def _garbage(path: Path) -> None:
    path.write_bytes(b"PAR1 not parquet")


@pytest.mark.parametrize(
    "make,message",
    [
        (_garbage, "is not a readable Parquet table"),
        (lambda p: p.write_bytes(b""), "is not a readable Parquet table"),
        (lambda p: pq.write_table(pa.table({"a": [1]}), p), "does not have the columns wartune expects"),
        (Path.mkdir, "is not a file"),
    ],
)
def test_read_rows_of_a_broken_table_is_one_line_naming_the_file(tmp_path, make, message):
    path = tmp_path / "trials.parquet"
    make(path)
    with pytest.raises(WartuneError, match=message) as err:
        read_rows(path, TRIAL_SCHEMA)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def _save_table(folder: Path, ok: bool) -> Path:
    rows = [{"a": 1}] if ok else [{"b": 1}]  # a row of the wrong shape fails mid-write
    write_table(rows, pa.schema([("a", pa.int64())]), folder / "t.parquet")
    return folder / "t.parquet"


def _save_model(folder: Path, ok: bool) -> Path:
    state = {"w": torch.ones(2)} if ok else {"w": "not a tensor"}
    save_model_files(state, {"model": "cnn-4"}, folder)  # type: ignore[dict-item]
    return folder / WEIGHTS_FILE


def _copy_model(folder: Path, ok: bool) -> Path:
    source = folder.parent / ("checkpoint" if ok else "broken checkpoint")
    if ok:
        _save_model(source, ok=True)
    copy_model_files(source, folder)  # a missing source fails mid-copy
    return folder / WEIGHTS_FILE


@pytest.mark.parametrize("save", [_save_table, _save_model, _copy_model])
def test_writes_are_atomic_a_failed_write_keeps_the_old_file(tmp_path, save):
    folder = tmp_path / "out"
    folder.mkdir()
    path = save(folder, ok=True)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(Exception):  # noqa: B017 - whatever the writer raises
        save(folder, ok=False)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no temporary file, no torn one
    assert path.exists()


def test_saved_model_files_load_back(tmp_path):
    from wartune.engine.models import create_model

    model = create_model("cnn-4", 10, 1, 8)
    meta = {"model": "cnn-4", "num_classes": 10, "in_channels": 1, "image_size": 8, "dataset": "digits", "train_config": {}}
    save_model_files(model.state_dict(), meta, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([META_FILE, WEIGHTS_FILE])
    loaded, got = load_model(tmp_path)
    assert got == meta
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True))


def test_the_last_epochs_full_split_evaluation_is_the_trial_row_and_survives_a_restarted_driver(tmp_path):
    meta = replace(_meta("a_00000"), precision="bf16", graphs="captured")
    sink = ParquetSink(tmp_path)
    full = {"nat_acc": 0.8, "rob_acc": 0.4, "stability": 0.6, "lipschitz": 2.0, "eval_examples": 360}
    for epoch in (1, 2, 3):
        sink.on_epoch(meta, _result(epoch, 2) | ({FULL_SPLIT_RESULT: full} if epoch == 3 else {}))
    ParquetSink(tmp_path).on_trial_end(_meta("a_00000"), "finished", None)  # knows no precision yet
    [trial] = read_rows(tmp_path / TRIALS_FILE, TRIAL_SCHEMA)
    assert [r["epoch"] for r in read_rows(tmp_path / EPOCHS_FILE, EPOCH_SCHEMA)] == [1, 2, 3]
    assert {k: trial[k] for k in full} == full and trial["metrics_from"] == "full_split"
    assert (trial["best_epoch"], trial["best_epoch_rob_acc"], trial["final_rob_acc"]) == (1, 0.5, 0.5)
    assert (trial["precision"], trial["graphs"], trial["war_skipped_steps"], trial["status"]) == (
        "bf16", "captured", 3, "finished",
    )  # fmt: skip


def test_a_trials_table_from_before_the_front_columns_reads_and_gains_them(tmp_path):
    sink = ParquetSink(tmp_path)
    for epoch in (1, 2, 3):
        sink.on_epoch(_meta("a_00000"), _result(epoch, 2))
    sink.on_trial_end(_meta("a_00000"), "finished", None)
    table = pq.read_table(tmp_path / TRIALS_FILE)
    pq.write_table(table.drop_columns(["pareto", "pareto_by"]), tmp_path / TRIALS_FILE)  # as an older wartune wrote it
    [old] = read_rows(tmp_path / TRIALS_FILE, TRIAL_SCHEMA)
    assert (old["pareto"], old["pareto_by"]) == (None, None)
    ParquetSink(tmp_path).close()  # a resumed search rewrites the table, front marked
    assert pq.read_table(tmp_path / TRIALS_FILE).schema.equals(TRIAL_SCHEMA)
    [new] = read_rows(tmp_path / TRIALS_FILE, TRIAL_SCHEMA)
    assert (new["pareto"], new["pareto_by"]) == (True, "rob_acc,nat_acc")

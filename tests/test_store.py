"""The Parquet store: steps appended per trial and epoch, atomic writes, one-line errors."""

from __future__ import annotations

import errno
import io
import itertools
import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wartune.errors import WartuneError
from wartune.results import model_files
from wartune.results.model_files import (
    META_FILE,
    WEIGHTS_FILE,
    copy_model_files,
    load_model,
    save_model_files,
)
from wartune.results.sinks import ParquetSink
from wartune.results.store import (
    COMPARE_FILE,
    COMPARE_SCHEMA,
    EPOCH_SCHEMA,
    EPOCHS_FILE,
    STEP_SCHEMA,
    STEPS_FILE,
    TRIAL_SCHEMA,
    TRIALS_FILE,
    TUNED_COLUMNS,
    read_rows,
    step_file,
    upgrade_steps_file,
    upgrade_table,
    write_table,
)
from wartune.results.trials import TEST_RESULT, TrialMeta, decode_flags, encode_flags

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
    result.update(epoch=epoch, val_examples=30, war_skipped_steps=1)
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


def _half_then_fail(data: bytes, dest: str | Path) -> NoReturn:
    """What a full disk does to a writer: the first half of its bytes land in `dest`, then an error."""
    Path(dest).write_bytes(data[: len(data) // 2])
    raise OSError(errno.ENOSPC, "No space left on device (simulated)")


_write_parquet = pq.write_table  # the real writer, before a test tears it


def _parquet_bytes(table: pa.Table) -> bytes:
    out = io.BytesIO()
    _write_parquet(table, out)
    return out.getvalue()


def _save_table(folder: Path, first: bool) -> Path:
    write_table([{"a": 1 if first else 2}], pa.schema([("a", pa.int64())]), folder / "t.parquet")
    return folder / "t.parquet"


def _tear_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pq, "write_table", lambda table, where, **_: _half_then_fail(_parquet_bytes(table), where))


def _save_model(folder: Path, first: bool) -> Path:
    save_model_files({"w": torch.full((64,), 1.0 if first else 2.0)}, {"model": "cnn-4"}, folder)
    return folder / WEIGHTS_FILE


def _tear_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_files, "save_file", lambda tensors, filename, metadata=None: _half_then_fail(
        safetensors.torch.save(tensors, metadata), filename))  # fmt: skip


def _copy_model(folder: Path, first: bool) -> Path:
    source = folder.parent / f"checkpoint {first}"
    _save_model(source, first)
    copy_model_files(source, folder)
    return folder / WEIGHTS_FILE


def _tear_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "copyfile", lambda src, dst, **_: _half_then_fail(Path(src).read_bytes(), dst))


@pytest.mark.parametrize("save,tear", [(_save_table, _tear_table), (_save_model, _tear_model), (_copy_model, _tear_copy)])
def test_writes_are_atomic_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch, save, tear):
    """The second save dies half-way through its bytes (`tear`): a writer that wrote straight
    into the file would leave it torn; an atomic one leaves the first save's bytes and no temporary file."""
    folder = tmp_path / "out"
    folder.mkdir()
    path = save(folder, first=True)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    tear(monkeypatch)
    with pytest.raises(OSError, match="No space left on device"):
        save(folder, first=False)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no temporary file, no torn one
    assert path.exists()
    save(folder, first=False)  # untorn, the same save does replace the file
    assert path.read_bytes() != before[path.name]


def test_saved_model_files_load_back(tmp_path):
    from wartune.engine.models import create_model

    model = create_model("cnn-4", 10, 1, 8)
    meta = {"model": "cnn-4", "num_classes": 10, "in_channels": 1, "image_size": 8, "dataset": "digits", "train_config": {}}
    save_model_files(model.state_dict(), meta, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([META_FILE, WEIGHTS_FILE])
    loaded, got = load_model(tmp_path)
    assert got == meta
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True))


def _wilson(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The 95 % Wilson score interval, written out here so the test does not trust the code under test."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_the_last_epochs_test_reading_is_the_trial_row_and_survives_a_restarted_driver(tmp_path):
    meta = replace(_meta("a_00000"), precision="bf16", graphs="captured")
    sink = ParquetSink(tmp_path)
    robust = np.arange(360) % 5 < 2  # 144 of 360 robust: 0.4
    correct = np.arange(360) % 5 < 4  # 288 of 360 right: 0.8
    test = {"test_nat_acc": 0.8, "test_rob_acc": 0.4, "test_stability": 0.6, "test_lipschitz": 2.0,
            "test_examples": 360, "test_robust": encode_flags(robust), "test_correct": encode_flags(correct)}  # fmt: skip
    for epoch in (1, 2, 3):
        sink.on_epoch(meta, _result(epoch, 2) | ({TEST_RESULT: test} if epoch == 3 else {}))
    [running] = read_rows(tmp_path / TRIALS_FILE, TRIAL_SCHEMA)
    assert running["test_rob_acc"] == 0.4 and running["status"] == "running"
    ParquetSink(tmp_path).on_trial_end(_meta("a_00000"), "finished", None)  # knows no precision yet
    [trial] = read_rows(tmp_path / TRIALS_FILE, TRIAL_SCHEMA)
    epochs = read_rows(tmp_path / EPOCHS_FILE, EPOCH_SCHEMA)
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    assert all(r["val_rob_acc"] == 0.5 and r["val_examples"] == 30 for r in epochs)  # the epochs keep validation's
    assert {k: trial[k] for k in test} == test and trial["selected_on"] == "validation"
    assert np.array_equal(decode_flags(trial["test_robust"], 360), robust)
    assert np.array_equal(decode_flags(trial["test_correct"], 360), correct)
    assert (trial["test_rob_acc_lo"], trial["test_rob_acc_hi"]) == pytest.approx(_wilson(144, 360))
    assert (trial["test_nat_acc_lo"], trial["test_nat_acc_hi"]) == pytest.approx(_wilson(288, 360))
    # the best epoch (all tie at 0.5: the earliest) by validation, with its own interval on its 30 images
    assert (trial["best_epoch"], trial["val_rob_acc"], trial["val_examples"], trial["final_val_rob_acc"]) == (1, 0.5, 30, 0.5)
    assert (trial["val_rob_acc_lo"], trial["val_rob_acc_hi"]) == pytest.approx(_wilson(15, 30))
    assert (trial["precision"], trial["graphs"], trial["war_skipped_steps"], trial["status"]) == (
        "bf16", "captured", 3, "finished",
    )  # fmt: skip


def test_a_trial_before_its_test_reading_has_validation_figures_and_no_test_ones(tmp_path):
    sink = ParquetSink(tmp_path)
    for epoch, rob in ((1, 0.3), (2, 0.6), (3, 0.4)):
        sink.on_epoch(_meta("a_00000"), _result(epoch, 2) | {"val_rob_acc": rob})
    [trial] = read_rows(tmp_path / TRIALS_FILE, TRIAL_SCHEMA)
    assert (trial["best_epoch"], trial["val_rob_acc"], trial["final_val_rob_acc"]) == (2, 0.6, 0.4)
    assert (trial["val_rob_acc_lo"], trial["val_rob_acc_hi"]) == pytest.approx(_wilson(18, 30))
    assert all(trial[k] is None for k in TRIAL_SCHEMA.names if k.startswith("test_"))


# schema 3 (wartune 0.2.0 and the commits after it): the figures before issue 27 split them into val_* and test_*
_KEY_FIELDS = [TRIAL_SCHEMA.field(name) for name in TRIAL_SCHEMA.names[:9]]
_OLD_EPOCH_FIELDS = [
    ("lambda_setting", pa.float64()), ("epoch", pa.int64()), ("nat_acc", pa.float64()), ("rob_acc", pa.float64()),
    ("stability", pa.float64()), ("lipschitz", pa.float64()), ("train_lipschitz", pa.float64()),
    ("l_nat", pa.float64()), ("l_rob", pa.float64()), ("zeta", pa.float64()), ("zeta_step_std", pa.float64()),
    ("lambda_mean", pa.float64()), ("lambda_last", pa.float64()), ("lambda_min", pa.float64()),
    ("lambda_max", pa.float64()), ("lr", pa.float64()), ("wall_seconds", pa.float64()), ("eval_examples", pa.int64()),
    ("war_skipped_steps", pa.int64()), ("stack", pa.string()),
]  # fmt: skip
_OLD_TRIAL_FIELDS = [
    ("lambda_setting", pa.float64()), ("lambda_final", pa.float64()), ("lambda_settled_epoch", pa.int64()),
    ("war_skipped_steps", pa.int64()), ("zeta", pa.float64()), ("zeta_step_std", pa.float64()),
    ("zeta_from", pa.string()), ("zeta_used", pa.float64()), ("best_epoch", pa.int64()), ("epochs", pa.int64()),
    ("nat_acc", pa.float64()), ("rob_acc", pa.float64()), ("stability", pa.float64()), ("lipschitz", pa.float64()),
    ("eval_examples", pa.int64()), ("metrics_from", pa.string()),
    ("best_epoch_nat_acc", pa.float64()), ("best_epoch_rob_acc", pa.float64()), ("best_epoch_stability", pa.float64()),
    ("final_nat_acc", pa.float64()), ("final_rob_acc", pa.float64()), ("final_stability", pa.float64()),
    ("pareto", pa.bool_()), ("pareto_by", pa.string()), ("wall_seconds", pa.float64()),
    ("device_seconds", pa.float64()), ("device", pa.string()), ("precision", pa.string()), ("graphs", pa.string()),
    ("cpus", pa.float64()), ("gpus", pa.float64()), ("started_at", pa.float64()), ("ended_at", pa.float64()),
    ("restarts", pa.int64()), ("resumed_from_epoch", pa.int64()), ("resume_note", pa.string()), ("node", pa.string()),
    ("status", pa.string()), ("error", pa.string()), ("checkpoint", pa.string()), ("stack", pa.string()),
    ("aa_rob_acc", pa.float64()), ("aa_examples", pa.int64()), ("aa_seconds", pa.float64()),
    ("wartune_version", pa.string()),
]  # fmt: skip
_OLD_COMPARE_FIELDS = [
    ("compare", pa.string()), ("strategy", pa.string()), ("model", pa.string()), ("width", pa.float64()),
    ("seed", pa.int64()), ("lambda_final", pa.float64()), ("lambda_settled_epoch", pa.int64()),
    ("nat_acc", pa.float64()), ("rob_acc", pa.float64()), ("aa_rob_acc", pa.float64()), ("stability", pa.float64()),
    ("trials", pa.int64()), ("device_seconds", pa.float64()), ("calibration_seconds", pa.float64()),
    ("total_seconds", pa.float64()), ("cost_vs_grid", pa.float64()), ("aa_seconds", pa.float64()),
    ("best_trial", pa.string()),
]  # fmt: skip


def _old_table(fields: list, rows: list[dict[str, Any]], path: Path) -> None:
    """A table as schema 3 wrote it: its columns, every one not given null."""
    schema = pa.schema(fields)
    pq.write_table(pa.Table.from_pylist([{n: r.get(n) for n in schema.names} for r in rows], schema=schema), path)


_KEY = {"search": "s", "strategy": "grid", "model": "cnn-4", "width": 4.0, "dataset": "digits",
        "objective": "trades", "eps": 0.2, "seed": 0}  # fmt: skip


def test_schema_3_tables_read_with_schema_4_names_and_upgrade_to_them(tmp_path):
    finished = {**_KEY, "trial_id": "a_00000", "status": "finished", "metrics_from": "full_split", "best_epoch": 2,
                "epochs": 3, "nat_acc": 0.81, "rob_acc": 0.42, "stability": 0.61, "lipschitz": 2.5,
                "eval_examples": 360, "best_epoch_nat_acc": 0.85, "best_epoch_rob_acc": 0.45,
                "best_epoch_stability": 0.65, "final_nat_acc": 0.84, "final_rob_acc": 0.44, "final_stability": 0.64,
                "lambda_setting": 6.0, "wartune_version": "0.2.0"}  # fmt: skip
    # stopped early: its nat_acc... were the best epoch's figures again, not a test reading
    stopped = {**finished, "trial_id": "b_00001", "status": "stopped", "metrics_from": "best_epoch", "best_epoch": 1,
               "nat_acc": 0.7, "rob_acc": 0.3, "stability": 0.5, "lipschitz": 3.0, "eval_examples": 90,
               "best_epoch_nat_acc": 0.7, "best_epoch_rob_acc": 0.3, "best_epoch_stability": 0.5}  # fmt: skip
    _old_table(_KEY_FIELDS + _OLD_TRIAL_FIELDS, [finished, stopped], tmp_path / TRIALS_FILE)
    epochs = [{**_KEY, "trial_id": "a_00000", "epoch": e, "nat_acc": 0.8 + e / 100, "rob_acc": 0.4 + e / 100,
               "stability": 0.6, "lipschitz": 1.5, "eval_examples": 90, "lambda_setting": 6.0} for e in (1, 2, 3)]  # fmt: skip
    _old_table(_KEY_FIELDS + _OLD_EPOCH_FIELDS, epochs, tmp_path / EPOCHS_FILE)
    grid = {"compare": "c", "strategy": "grid", "model": "cnn-4", "width": 4.0, "seed": 0, "nat_acc": 0.81,
            "rob_acc": 0.42, "stability": 0.61, "trials": 4, "best_trial": "a_00000"}  # fmt: skip
    _old_table(_OLD_COMPARE_FIELDS, [grid], tmp_path / COMPARE_FILE)

    a, b = read_rows(tmp_path / TRIALS_FILE, TRIAL_SCHEMA)
    assert (a["val_nat_acc"], a["val_rob_acc"], a["val_stability"]) == (0.85, 0.45, 0.65)
    assert (a["final_val_nat_acc"], a["final_val_rob_acc"], a["final_val_stability"]) == (0.84, 0.44, 0.64)
    assert (a["test_nat_acc"], a["test_rob_acc"], a["test_stability"], a["test_lipschitz"], a["test_examples"]) == (
        0.81, 0.42, 0.61, 2.5, 360,
    )  # fmt: skip
    assert (b["val_rob_acc"], b["final_val_rob_acc"]) == (0.3, 0.44)
    assert all(b[k] is None for k in ("test_nat_acc", "test_rob_acc", "test_stability", "test_lipschitz", "test_examples"))
    assert a["selected_on"] == b["selected_on"] == "test"  # its choices read the test split
    assert (a["test_robust"], a["test_correct"], a["best_epoch"], a["wartune_version"]) == (None, None, 2, "0.2.0")
    assert list(a) == TRIAL_SCHEMA.names
    rows = read_rows(tmp_path / EPOCHS_FILE, EPOCH_SCHEMA)
    assert [(r["val_nat_acc"], r["val_rob_acc"], r["val_lipschitz"], r["val_examples"]) for r in rows] == [
        (0.8 + e / 100, 0.4 + e / 100, 1.5, 90) for e in (1, 2, 3)
    ]
    [row] = read_rows(tmp_path / COMPARE_FILE, COMPARE_SCHEMA)
    assert (row["test_nat_acc"], row["test_rob_acc"], row["test_stability"], row["val_rob_acc"]) == (0.81, 0.42, 0.61, None)

    gains = {
        TRIALS_FILE: {"selected_on", "val_examples", "test_robust", "test_correct", *TUNED_COLUMNS}
        | {f"{split}_{f}_{end}" for split in ("val", "test") for f in ("nat_acc", "rob_acc", "stability") for end in ("lo", "hi")},
        EPOCHS_FILE: set(),
        COMPARE_FILE: {"val_rob_acc", "test_rob_acc_lo", "test_rob_acc_hi", "rob_vs_grid", "rob_vs_grid_lo", "rob_vs_grid_hi"},
    }
    for name, schema in ((TRIALS_FILE, TRIAL_SCHEMA), (EPOCHS_FILE, EPOCH_SCHEMA), (COMPARE_FILE, COMPARE_SCHEMA)):
        before = read_rows(tmp_path / name, schema)
        renamed, gained = upgrade_table(tmp_path / name, schema)
        assert renamed and set(gained) == gains[name]
        assert pq.read_table(tmp_path / name).schema.equals(schema, check_metadata=False)
        assert read_rows(tmp_path / name, schema) == before
        stamp = (tmp_path / name).stat().st_mtime_ns
        assert upgrade_table(tmp_path / name, schema) == (False, [])  # current now: left alone
        assert (tmp_path / name).stat().st_mtime_ns == stamp


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

"""Figures from a real search's Parquet files: which PNGs appear, that they are images, that
each line plots the tables' figures (read back from the figure), and that a figure without
data is skipped rather than failed."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib.image
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from wartune.results.plots import write_plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ALL = {"lambda_metrics.png", "stability_vs_width.png", "epoch_curves.png", "war_lambda.png", "lipschitz_vs_width.png",
       "pareto_front.png"}  # fmt: skip
TABLES = ("trials.parquet", "epochs.parquet")  # steps.parquet is a folder: one file per trial and epoch


def _copy(src: Path, dest: Path, keep: Callable[[dict[str, Any]], bool] = lambda t: True) -> Path:
    """The search's tables, limited to the trials `keep` accepts (the session's folder stays untouched)."""
    dest.mkdir(parents=True)
    ids = {t["trial_id"] for t in pq.read_table(src / "trials.parquet").to_pylist() if keep(t)}
    for name in TABLES:
        table = pq.read_table(src / name)
        pq.write_table(table.filter(pc.is_in(table["trial_id"], pa.array(sorted(ids)))), dest / name)
    (dest / "steps.parquet").mkdir()
    for path in (src / "steps.parquet").iterdir():
        if path.name.rsplit("-e", 1)[0] in ids:
            shutil.copy(path, dest / "steps.parquet")
    return dest


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000, path
    height, width, _ = matplotlib.image.imread(path).shape
    assert height >= 400 and width >= 400, (path, height, width)


def test_write_plots_writes_every_figure_as_png(war_search, tmp_path):
    folder = _copy(war_search["folder"], tmp_path / "search")
    written = write_plots(folder)
    assert {p.name for p in written} == ALL and len(written) == len(ALL)
    for path in written:
        assert path.parent == folder / "plots"
        _assert_png(path)


def test_figures_without_data_are_skipped(war_search, tmp_path):
    src = war_search["folder"]
    fixed_only = _copy(src, tmp_path / "fixed", lambda t: t["lambda_setting"] is not None)
    # no WAR trial, and one trial per model: nothing to trade off
    assert {p.name for p in write_plots(fixed_only)} == ALL - {"war_lambda.png", "pareto_front.png"}
    one_width = _copy(src, tmp_path / "one_width", lambda t: t["model"] == "cnn-8")
    assert {p.name for p in write_plots(one_width)} == {"lambda_metrics.png", "epoch_curves.png", "war_lambda.png", "pareto_front.png"}
    war_only = _copy(src, tmp_path / "war_only", lambda t: t["lambda_setting"] is None)
    assert {p.name for p in write_plots(war_only)} == {"epoch_curves.png", "war_lambda.png", "lipschitz_vs_width.png"}
    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_plots(empty) == [] and not (empty / "plots").exists()


def _compare_rows(trials: list[dict[str, Any]], robust: str) -> list[dict[str, Any]]:
    """compare.parquet rows, one per trial, its test robust accuracy under the column `robust`."""
    return [
        {"compare": "c", "strategy": t["strategy"], "model": t["model"], "width": t["width"],
         robust: t["test_rob_acc"], "device_seconds": t["device_seconds"] * (8 if t["strategy"] == "grid" else 1)}
        for t in trials
    ]  # fmt: skip


def test_compare_table_adds_robust_accuracy_against_compute(war_search, tmp_path):
    from wartune.results.plots import figures

    trials = pq.read_table(war_search["folder"] / "trials.parquet").to_pylist()
    # test_rob_acc: schema 4's compare.parquet; rob_acc: schema 3's, read under its current name
    for robust in ("test_rob_acc", "rob_acc"):
        only_compare = tmp_path / f"compare_{robust}"
        only_compare.mkdir()
        pq.write_table(pa.Table.from_pylist(_compare_rows(trials, robust)), only_compare / "compare.parquet")
        (path,) = write_plots(only_compare)
        assert path.name == "robust_vs_cost.png"
        _assert_png(path)
        (ax,) = figures(only_compare)["robust_vs_cost.png"].axes
        # a line per strategy across the two models: each best trial's test robust accuracy (%) at its cost
        lines = {line.get_label(): sorted(_xy(line)) for line in ax.lines}
        assert lines == {
            s: sorted(((8 if s == "grid" else 1) * t["device_seconds"], 100 * t["test_rob_acc"]) for t in trials if t["strategy"] == s)
            for s in ("grid", "war")
        }
    folder = _copy(war_search["folder"], tmp_path / "search")
    shutil.copy(only_compare / "compare.parquet", folder)
    assert {p.name for p in write_plots(folder)} == ALL | {"robust_vs_cost.png"}


def test_pareto_front_draws_a_panel_per_width_from_a_hand_made_table(tmp_path):
    from wartune.results.pareto import mark_pareto

    def trial(i: int, model: str, width: float, lam: float | None, rob: float, nat: float) -> dict[str, Any]:
        return {"trial_id": f"t{i}", "model": model, "width": width, "lambda_setting": lam, "lambda_final": lam or 4.2,
                "zeta_used": None if lam else 4.0, "objective": "trades", "dataset": "digits", "eps": 0.2,
                "status": "finished", "val_rob_acc": rob, "val_nat_acc": nat, "val_stability": 0.5,
                "test_rob_acc": 1 - rob, "test_nat_acc": 1 - nat, "test_stability": 0.5}  # fmt: skip

    points = [(1, 0.30, 0.97), (6, 0.36, 0.95), (12, 0.38, 0.91), (21, 0.33, 0.90), (None, 0.37, 0.94)]
    rows = [trial(i, m, w, lam, rob + w / 100, nat) for m, w in (("wrn10-0.5", 0.5), ("wrn10-2", 2.0))
            for i, (lam, rob, nat) in enumerate(points)]  # fmt: skip
    folder = tmp_path / "sweep"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(mark_pareto(rows)), folder / "trials.parquet")
    written = {p.name: p for p in write_plots(folder)}
    _assert_png(written["pareto_front.png"])
    height, width, _ = matplotlib.image.imread(written["pareto_front.png"]).shape
    assert width > 1.5 * height  # two panels side by side
    from wartune.results.plots import figures

    # each panel's points are its model's validation figures (natural, robust), in %: the front's
    # split; the test figures (1 minus each here) would draw the mirror image
    for ax, model in zip(figures(folder)["pareto_front.png"].axes, ("wrn10-0.5", "wrn10-2"), strict=True):
        (points,) = ax.collections
        expected = [(100 * r["val_nat_acc"], 100 * r["val_rob_acc"]) for r in rows if r["model"] == model]
        assert [tuple(p) for p in points.get_offsets().tolist()] == [pytest.approx(xy) for xy in expected]
        assert "validation" in ax.get_xlabel() and "validation" in ax.get_ylabel()
    pq.write_table(pa.Table.from_pylist(rows[:1]), folder / "trials.parquet")  # one trial: nothing to trade off
    assert "pareto_front.png" not in {p.name for p in write_plots(folder)}


def _xy(line: Any) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in line.get_xydata()]


def test_the_figures_plot_the_tables_figures(war_search, tmp_path):
    # The data behind each line, read back from the figure: a plot that drew the wrong column,
    # the wrong trial or unscaled fractions fails here, whatever its file looks like.
    from wartune.results.plots import figures

    folder = _copy(war_search["folder"], tmp_path / "search")
    trials = pq.read_table(folder / "trials.parquet").to_pylist()
    epochs = pq.read_table(folder / "epochs.parquet").to_pylist()
    drawn = figures(folder)

    robust, natural, stable = drawn["lambda_metrics.png"].axes
    for panel, key in ((robust, "test_rob_acc"), (natural, "test_nat_acc"), (stable, "test_stability")):
        lines = {line.get_label().split()[0]: _xy(line) for line in panel.lines}
        expected = {t["model"]: [(t["lambda_setting"], 100 * t[key])] for t in trials if t["lambda_setting"] is not None}
        assert lines == expected, key  # one λ per model in this search: one point per line

    robust_per_epoch = drawn["epoch_curves.png"].axes[0]
    assert len(robust_per_epoch.lines) == len(trials)
    labels = {line.get_label(): _xy(line) for line in robust_per_epoch.lines}
    for t in trials:
        from wartune.results.trials import trial_label

        rows = sorted((e for e in epochs if e["trial_id"] == t["trial_id"]), key=lambda e: e["epoch"])
        assert labels[trial_label(t)] == [(e["epoch"], 100 * e["val_rob_acc"]) for e in rows]  # validation's

    (by_width,) = drawn["stability_vs_width.png"].axes
    (line,) = by_width.lines  # the one fixed λ, across the two widths
    assert _xy(line) == sorted((t["width"], 100 * t["test_stability"]) for t in trials if t["lambda_setting"] is not None)

    (lipschitz,) = drawn["lipschitz_vs_width.png"].axes
    fixed, war = lipschitz.lines  # λ = 1, then WAR: each across the two widths, the test reading's estimate
    assert _xy(fixed) == sorted((t["width"], t["test_lipschitz"]) for t in trials if t["lambda_setting"] is not None)
    assert _xy(war) == sorted((t["width"], t["test_lipschitz"]) for t in trials if t["lambda_setting"] is None)
    assert all(t["test_lipschitz"] is not None for t in trials)

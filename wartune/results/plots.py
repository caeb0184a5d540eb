"""Figures of a search, drawn from its Parquet files alone into `<folder>/plots/`.

The paper's Table 1 as curves over λ, stability and the Lipschitz estimate over width
(Fig. 4), per-epoch curves (Fig. 3), WAR's λ_t trace, and robust accuracy against compute
when a `compare.parquet` is there. Each figure is skipped, not failed, when its data is
missing (no WAR trial, a single width...). Figures are `matplotlib.figure.Figure` objects
on an explicit Agg canvas: no pyplot state, so this works headless, from a Ray driver or a
test, and leaves a notebook's backend alone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from wartune.errors import WartuneError
from wartune.results.formatting import lambda_text
from wartune.results.pareto import objective_column, pareto_mask, pareto_objectives
from wartune.results.seeds import group, mean_of, repeated
from wartune.results.store import (
    COMPARE_FILE,
    COMPARE_SCHEMA,
    EPOCH_SCHEMA,
    EPOCHS_FILE,
    PLOTS_DIR,
    STEPS_FILE,
    TRIAL_SCHEMA,
    TRIALS_FILE,
    read_table,
    renamed_to_current,
)
from wartune.results.trials import trial_label

METRICS = (("test_rob_acc", "test robust accuracy (%)"), ("test_nat_acc", "test natural accuracy (%)"),
           ("test_stability", "test perturbation stability (%)"))  # fmt: skip
# epochs.parquet's figures: each epoch's evaluation on the validation split
EPOCH_METRICS = (("val_rob_acc", "validation robust accuracy (%)"), ("val_nat_acc", "validation natural accuracy (%)"),
                 ("val_stability", "validation perturbation stability (%)"))  # fmt: skip


@dataclass
class SearchData:
    """A search folder's tables as rows; a missing file is an empty list."""

    name: str
    trials: list[dict[str, Any]]
    epochs: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    compare: list[dict[str, Any]]

    @property
    def finished_fixed(self) -> list[dict[str, Any]]:
        """Finished trials with a fixed λ and metrics: the rows of the paper's Table 1."""
        return [t for t in self.trials if t.get("lambda_setting") is not None and t.get("status") == "finished" and t.get("test_rob_acc") is not None]

    @property
    def war_ids(self) -> set[str]:
        return {t["trial_id"] for t in self.trials if t.get("lambda_setting") is None and t.get("zeta_used") is not None}


def _rows(path: Path, needs: tuple[str, ...], schema: pa.Schema | None = None) -> list[dict[str, Any]]:
    """A table's rows (a folder is a dataset: steps.parquet), if it has the columns `needs`.

    Not store.read_rows: a figure should not refuse a table of an older or newer schema,
    only one without the columns the figures index by (an older table's under their current
    names: `schema`).
    """
    if not path.exists():
        return []
    table = read_table(path)
    if schema is not None:
        table = renamed_to_current(table, schema)
    missing = [c for c in needs if c not in table.column_names]
    if missing:
        raise WartuneError(f"{str(path)!r} lacks the columns {missing}: not a wartune {path.name} table")
    return table.to_pylist()


def load(folder: Path) -> SearchData:
    folder = Path(folder)
    return SearchData(
        name=folder.name,
        trials=_rows(folder / TRIALS_FILE, ("trial_id", "model", "width", "lambda_setting", "zeta_used", "objective", "dataset", "eps"),
                     TRIAL_SCHEMA),
        epochs=_rows(folder / EPOCHS_FILE, ("trial_id", "epoch", *(key for key, _ in EPOCH_METRICS)), EPOCH_SCHEMA),
        steps=_rows(folder / STEPS_FILE, ("trial_id", "epoch", "step", "lambda_t")),
        compare=_rows(folder / COMPARE_FILE, ("strategy", "model"), COMPARE_SCHEMA),
    )


def _as_percent(v: float | None) -> float:
    return float("nan") if v is None else 100.0 * v


def _subtitle(data: SearchData) -> str:
    if not data.trials:
        return data.name
    t = data.trials[0]
    return f"search {data.name}: {t['objective']} on {t['dataset']}, ε = {t['eps']:g}"


def _width_axis(ax: Axes, widths: list[float]) -> None:
    """Widths double from one model to the next, so a wide span reads better on log2."""
    if min(widths) > 0 and max(widths) / min(widths) >= 4:
        ax.set_xscale("log", base=2)
    ax.set_xticks(widths, [f"{w:g}" for w in widths])
    ax.set_xlabel("width (the W in the model name)")


def _mean_by(rows: list[dict[str, Any]], key: str, value: str) -> tuple[list[float], list[float]]:
    """x sorted, y averaged over trials that share x (several seeds, or a repeated λ)."""
    groups: dict[float, list[float]] = defaultdict(list)
    for r in rows:
        if r.get(value) is not None:
            groups[r[key]].append(r[value])
    xs = sorted(groups)
    return xs, [sum(groups[x]) / len(groups[x]) for x in xs]


def _save(fig: Figure, out: Path, name: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120)
    return path


def _figure(panels: int, title: str) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(4.6 * panels, 4.2), layout="constrained")
    axes = [fig.add_subplot(1, panels, i + 1) for i in range(panels)]
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return fig, axes


def lambda_metrics(data: SearchData) -> Figure | None:
    """Robust / natural / stability against λ, one line per model: Table 1 as a figure."""
    fixed = data.finished_fixed
    if not fixed:
        return None
    fig, axes = _figure(3, f"Metrics at each trial's best epoch against λ\n{_subtitle(data)}")
    models = sorted({t["model"] for t in fixed}, key=lambda m: (next(t["width"] for t in fixed if t["model"] == m), m))
    for model in models:
        rows = [t for t in fixed if t["model"] == model]
        for ax, (key, _) in zip(axes, METRICS, strict=True):
            xs, ys = _mean_by(rows, "lambda_setting", key)
            ax.plot(xs, [_as_percent(y) for y in ys], marker="o", label=f"{model} (width {rows[0]['width']:g})")
    for ax, (_, label) in zip(axes, METRICS, strict=True):
        ax.set_xlabel("λ (robust-regularisation weight)")
        ax.set_ylabel(label)
    axes[0].legend(title="model", fontsize="small")
    return fig


def stability_vs_width(data: SearchData) -> Figure | None:
    """Perturbation stability against width at each fixed λ (the paper's width effect)."""
    fixed = data.finished_fixed
    widths = sorted({t["width"] for t in fixed})
    if len(widths) < 2:
        return None
    fig, (ax,) = _figure(1, f"Stability against width\n{_subtitle(data)}")
    for lam in sorted({t["lambda_setting"] for t in fixed}):
        xs, ys = _mean_by([t for t in fixed if t["lambda_setting"] == lam], "width", "test_stability")
        ax.plot(xs, [_as_percent(y) for y in ys], marker="o", label=f"λ = {lam:g}")
    _width_axis(ax, widths)
    ax.set_ylabel("perturbation stability (%)")
    ax.legend(fontsize="small")
    return fig


def epoch_curves(data: SearchData) -> Figure | None:
    """Natural, robust accuracy and stability per epoch, one line per trial (Fig. 3)."""
    if not data.epochs:
        return None
    trials = {t["trial_id"]: t for t in data.trials}
    ids = sorted({r["trial_id"] for r in data.epochs})
    fig, axes = _figure(3, f"Per-epoch evaluation on the validation split\n{_subtitle(data)}")
    for trial_id in ids:
        rows = sorted((r for r in data.epochs if r["trial_id"] == trial_id), key=lambda r: r["epoch"])
        label = trial_label(trials.get(trial_id, rows[0]))
        for ax, (key, _) in zip(axes, EPOCH_METRICS, strict=True):
            ax.plot([r["epoch"] for r in rows], [_as_percent(r[key]) for r in rows], marker=".", label=label)
    for ax, (_, label) in zip(axes, EPOCH_METRICS, strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", fontsize="small", title="trial")
    return fig


def war_lambda(data: SearchData) -> Figure | None:
    """λ_t over training for each WAR run (Algorithm 1's trace, from steps.parquet).

    One panel per model, one line per WAR strategy (`war`, `war-<variant>`): the mean over
    its seeds at every step, the band spanning the seeds. Where the same folder holds a
    grid on that model, a dashed line marks the grid's best λ (by mean robust accuracy).
    """
    war = {t["trial_id"]: t for t in data.trials if t["trial_id"] in data.war_ids}
    steps = [s for s in data.steps if s["trial_id"] in war]
    if not steps:
        return None
    traces: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for s in steps:
        traces[s["trial_id"]].append(((s["epoch"], s["step"]), s["lambda_t"]))
    models = sorted({t["model"] for t in war.values()}, key=lambda m: (next(t["width"] for t in war.values() if t["model"] == m), m))
    fig, axes = _figure(len(models), f"WAR: λ_t over training\n{_subtitle(data)}")
    for ax, model in zip(axes, models, strict=True):
        runs = group((t for t in war.values() if t["model"] == model), key=lambda t: t["strategy"])
        for strategy, trials in sorted(runs.items()):
            lines = [[v for _, v in sorted(traces[t["trial_id"]])] for t in trials if traces[t["trial_id"]]]
            if not lines:
                continue
            n = min(len(line) for line in lines)
            mean = [sum(line[i] for line in lines) / len(lines) for i in range(n)]
            zeta = trials[0].get("zeta_used") or 0.0
            seeds = f", {len(lines)} seeds" if len(lines) > 1 else ""
            (drawn,) = ax.plot(range(1, n + 1), mean, label=f"{strategy} (ζ = {zeta:.3g}{seeds})")
            if len(lines) > 1:
                low = [min(line[i] for line in lines) for i in range(n)]
                high = [max(line[i] for line in lines) for i in range(n)]
                ax.fill_between(range(1, n + 1), low, high, color=drawn.get_color(), alpha=0.15)
        grid = group((t for t in data.finished_fixed if t["model"] == model and t["strategy"] == "grid"), key=lambda t: t["lambda_setting"])
        if grid:
            best = max(grid, key=lambda lam: mean_of(grid[lam], "val_rob_acc"))
            ax.axhline(best, color="grey", linestyle="--", label=f"grid's best λ = {best:g}")
        ax.set_title(model, fontsize="medium")
        ax.set_xlabel("training step (all epochs)")
        ax.set_ylabel("λ_t")
        ax.legend(fontsize="small")
    return fig


def lipschitz_vs_width(data: SearchData) -> Figure | None:
    """The Lipschitz estimate at each trial's best epoch against width, per λ (Fig. 4)."""
    done = [t for t in data.trials if t.get("status") == "finished" and t.get("test_lipschitz") is not None]
    widths = sorted({t["width"] for t in done})
    if len(widths) < 2:
        return None
    fig, (ax,) = _figure(1, f"Lipschitz estimate against width\n{_subtitle(data)}")
    for lam in sorted({t["lambda_setting"] for t in done if t["lambda_setting"] is not None}):
        xs, ys = _mean_by([t for t in done if t["lambda_setting"] == lam], "width", "test_lipschitz")
        ax.plot(xs, ys, marker="o", label=f"λ = {lam:g}")
    war = [t for t in done if t["trial_id"] in data.war_ids]
    if war:
        xs, ys = _mean_by(war, "width", "test_lipschitz")
        ax.plot(xs, ys, marker="s", linestyle="--", color="black", label="WAR")
    _width_axis(ax, widths)
    ax.set_ylabel("Lipschitz estimate\n(mean input-gradient ℓ1 norm under PGD)")
    ax.legend(fontsize="small")
    return fig


def robust_vs_cost(data: SearchData) -> Figure | None:
    """Robust accuracy against compute per strategy, from compare.parquet (Table 3's trade-off)."""
    cost_key = "total_seconds" if any(r.get("total_seconds") is not None for r in data.compare) else "device_seconds"
    rows = [r for r in data.compare if r.get(cost_key) is not None and r.get("test_rob_acc") is not None]
    # One point per strategy and model: repeats over seeds as the mean robust accuracy at their summed cost.
    rows = [
        {**repeats[0], "test_rob_acc": mean_of(repeats, "test_rob_acc"), cost_key: sum(r[cost_key] for r in repeats)}
        for repeats in group(rows, key=lambda r: (r["strategy"], r["model"])).values()
    ]
    if not rows:
        return None
    hours = max(r[cost_key] for r in rows) >= 3600
    scale, unit = (1 / 3600, "device-hours") if hours else (1.0, "device-seconds")
    seeds = " (mean over seeds, cost summed)" if repeated(data.compare) else ""
    fig, (ax,) = _figure(1, f"Robust accuracy against compute\n{data.name}: each strategy's best trial per model{seeds}")
    for marker, strategy in zip("osD^v<>p*", sorted({r["strategy"] for r in rows}), strict=False):
        points = sorted((r for r in rows if r["strategy"] == strategy), key=lambda r: (r.get("width") or 0, r["model"]))
        xs, ys = [r[cost_key] * scale for r in points], [_as_percent(r["test_rob_acc"]) for r in points]
        ax.plot(xs, ys, marker=marker, label=strategy)
        for r, x, y in zip(points, xs, ys, strict=True):
            ax.annotate(r["model"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize="x-small")
    costs = [r[cost_key] for r in rows]
    if min(costs) > 0 and max(costs) / min(costs) >= 10:
        ax.set_xscale("log")
        # Ticks at 1-2-5 with plain labels: matplotlib's minor log labels overlap on a short axis.
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    included = ", calibration included" if cost_key == "total_seconds" else ""
    ax.set_xlabel(f"compute ({unit}{included})")
    ax.set_ylabel("robust accuracy (%)")
    ax.legend(title="strategy", fontsize="small")
    return fig


def pareto_front(data: SearchData) -> Figure | None:
    """The trade-off front per model: every finished trial at (second objective, first), its λ
    beside it; filled: trials.parquet's `pareto` marks; the step line: the front on these axes.

    The axes are the search's first two objectives (`pareto_by`; robust against natural
    accuracy by default); with a third, a filled point off the line is on the front by it.
    Skipped unless some model has two trials to trade off (a grid, an Optuna search).
    """
    done = [t for t in data.trials if t.get("status") == "finished"]
    y_name, x_name = pareto_objectives(next((t["pareto_by"].split(",") for t in done if t.get("pareto_by")), None))[:2]
    y_key, x_key = objective_column(y_name), objective_column(x_name)
    done = [t for t in done if t.get(x_key) is not None and t.get(y_key) is not None]
    models = sorted({t["model"] for t in done}, key=lambda m: (next(t["width"] for t in done if t["model"] == m), m))
    if not any(sum(t["model"] == m for t in done) >= 2 for m in models):
        return None
    labels = dict(EPOCH_METRICS)
    fig, axes = _figure(len(models), f"Trade-off front: each trial labelled with its λ\n{_subtitle(data)}")
    for ax, model in zip(axes, models, strict=True):
        rows = [t for t in done if t["model"] == model]
        xs, ys = [_as_percent(t[x_key]) for t in rows], [_as_percent(t[y_key]) for t in rows]
        marked = [bool(t.get("pareto")) for t in rows]
        ax.scatter(xs, ys, facecolors=["C0" if m else "none" for m in marked], edgecolors="C0", label="trial (filled: on the front)")
        front = sorted((x, y) for x, y, on in zip(xs, ys, pareto_mask(list(zip(xs, ys, strict=True))), strict=True) if on)
        ax.step([x for x, _ in front], [y for _, y in front], where="pre", color="C3", label="front")
        for t, x, y in zip(rows, xs, ys, strict=True):
            ax.annotate(lambda_text(t), (x, y), textcoords="offset points", xytext=(4, 4), fontsize="x-small")
        ax.set_title(f"{model} (width {rows[0]['width']:g})", fontsize="medium")
        ax.set_xlabel(labels.get(x_key, x_key))
        ax.set_ylabel(labels.get(y_key, y_key))
    axes[0].legend(fontsize="small")
    return fig


PLOTS: tuple[Callable[[SearchData], Figure | None], ...] = (
    lambda_metrics, stability_vs_width, epoch_curves, war_lambda, lipschitz_vs_width, robust_vs_cost, pareto_front,
)  # fmt: skip


def figures(folder: Path) -> dict[str, Figure]:
    """Every figure the folder's data supports, by file name (`lambda_metrics.png`…): what
    `write_plots` saves, and what a test reads the plotted data back from."""
    data = load(folder)
    return {f"{plot.__name__}.png": fig for plot in PLOTS if (fig := plot(data)) is not None}


def write_plots(folder: Path) -> list[Path]:
    """Every figure the folder's data supports, as PNGs in `folder/plots/`; the written paths."""
    return [_save(fig, Path(folder) / PLOTS_DIR, name) for name, fig in figures(folder).items()]

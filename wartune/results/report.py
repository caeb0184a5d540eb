"""Tables of a search's results: markdown for `summary.md`, rich for the terminal.

Built from the trials table alone, so `summary.md` can be regenerated from Parquet. Each
trial's best epoch, and the search's best trial, are chosen on the validation split (`val
robust`); its natural, robust and stability figures are those weights read once on the whole
test split when it finished (– before), each with its 95 % interval.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.table import Table

from wartune.engine.data import is_synthetic
from wartune.results.formatting import lambda_text, markdown_table, num, pct, pct_ci
from wartune.results.pareto import objective_column
from wartune.results.seeds import MeanSd, group, mean_of, repeated, seeds_of
from wartune.results.store import SUMMARY_FILE
from wartune.results.trials import best_by_autoattack, best_trial, is_finite

COLUMNS = ("trial", "strategy", "model", "λ", "val robust", "natural", "robust", "stability", "test n", "l_nat/l_rob", "wall s",
           "status")  # fmt: skip
AA_COLUMN = "AutoAttack"  # beside robust (PGD-20) when the search's end attacked trials (final_attack)
# Training settings a space's `search:` block may vary, by trials.parquet column, and their
# header: shown after λ where the trials differ in them, so a search over lr × wd shows the values.
SETTING_COLUMNS = {"lr": ("lr", "{:.3g}"), "weight_decay": ("wd", "{:.3g}"), "eps": ("train ε", "{:.3g}"),
                   "attack_steps": ("steps", "{:.0f}"), "attack_step": ("step", "{:.3g}"), "batch_size": ("batch", "{:.0f}")}  # fmt: skip


def attacked(trials: list[dict[str, Any]]) -> bool:
    """Whether any trial has an AutoAttack figure (trials.parquet's `aa_rob_acc`)."""
    return any(is_finite(t.get("aa_rob_acc")) for t in trials)


def varied_settings(trials: list[dict[str, Any]]) -> list[str]:
    """The `SETTING_COLUMNS` whose values differ between the trials (a `search:` block's)."""
    return [key for key in SETTING_COLUMNS if len({t.get(key) for t in trials} - {None}) > 1]


def settings_text(trial: dict[str, Any], trials: list[dict[str, Any]]) -> str:
    """`trial`'s values of the settings its search varied, as the best trial's line names them."""
    return "".join(f", {SETTING_COLUMNS[key][0]} {num(trial.get(key), SETTING_COLUMNS[key][1])}" for key in varied_settings(trials))


def columns(trials: list[dict[str, Any]]) -> tuple[str, ...]:
    """`COLUMNS`, with the varied settings after `λ` and `AutoAttack` after `robust` when any
    trial was attacked: the header of `rows`."""
    settings = tuple(SETTING_COLUMNS[key][0] for key in varied_settings(trials))
    aa = (AA_COLUMN,) if attacked(trials) else ()
    lam, rob = COLUMNS.index("λ") + 1, COLUMNS.index("robust") + 1
    return (*COLUMNS[:lam], *settings, *COLUMNS[lam:rob], *aa, *COLUMNS[rob:])


def chosen_on_test(trials: list[dict[str, Any]]) -> bool:
    """Whether any trial was begun by wartune 0.2.0 or before, whose choices read the test split."""
    return any(t.get("selected_on") == "test" for t in trials)


def rows(trials: list[dict[str, Any]]) -> list[list[str]]:
    """One text row per trial, in λ order, the best one (by validation) starred."""
    best = best_trial(trials)
    aa = attacked(trials)
    settings = varied_settings(trials)
    ordered = sorted(trials, key=lambda t: (t["model"], t["lambda_setting"] if t["lambda_setting"] is not None else math.inf))
    out = []
    for t in ordered:
        mark = " ★" if best is not None and t["trial_id"] == best["trial_id"] else ""
        out.append(
            [
                t["trial_id"] + mark,
                t["strategy"],
                t["model"],
                lambda_text(t),
                *(num(t.get(key), SETTING_COLUMNS[key][1]) for key in settings),
                pct_ci(t, "val_rob_acc"),
                pct_ci(t, "test_nat_acc"),
                pct_ci(t, "test_rob_acc"),
                *([pct(t.get("aa_rob_acc"))] if aa else []),
                pct_ci(t, "test_stability"),
                num(t.get("test_examples"), "{:.0f}"),
                num(t["zeta"]),
                num(t["wall_seconds"], "{:.0f}"),
                t["status"] + (f" ({t['error']})" if t["error"] else ""),
            ]
        )
    return out


def synthetic_note(trials: list[dict[str, Any]]) -> str | None:
    """The warning a table of runs on synthetic data carries: their accuracies mean nothing."""
    names = sorted({t["dataset"] for t in trials if is_synthetic(t["dataset"])})
    if not names:
        return None
    return (f"Synthetic data ({', '.join(names)}: random images and labels): accuracies are at chance; "
            "these runs measure cost, not robustness.")  # fmt: skip


def rich_table(trials: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title, caption=synthetic_note(trials))
    for col in columns(trials):
        table.add_column(col, justify="left" if col in ("trial", "strategy", "model", "status") else "right")
    best = best_trial(trials)
    for row in rows(trials):
        style = "bold green" if best is not None and row[0].startswith(best["trial_id"]) else None
        table.add_row(*row, style=style)
    return table


def summary_markdown(name: str, trials: list[dict[str, Any]]) -> str:
    """summary.md: the best trial, then every trial (metrics at its best epoch, in %)."""
    best = best_trial(trials)
    head = [f"# Search `{name}`", ""]
    if (note := synthetic_note(trials)) is not None:
        head += [f"**{note}**", ""]
    if best is not None:
        head += [
            f"Best trial **{best['trial_id']}** ({best['model']}, λ {lambda_text(best)}{settings_text(best, trials)}, {best['objective']}, "
            f"{best['dataset']}, ε {best['eps']:g}), chosen on {best.get('selected_on') or 'test'}: "
            f"robust {pct_ci(best, 'val_rob_acc')} % on {num(best.get('val_examples'), '{:.0f}')} validation images at its "
            f"epoch {best['best_epoch']}; those weights on the test split: robust {pct_ci(best, 'test_rob_acc')} %, "
            f"natural {pct_ci(best, 'test_nat_acc')} %, stability {pct_ci(best, 'test_stability')} % "
            f"({num(best.get('test_examples'), '{:.0f}')} images).",
            "",
            f"Its weights: `{best['checkpoint']}/model.safetensors` (load with `wartune.results.model_files.load_model`).",
            "",
        ]
        head += autoattack_lines(trials)
    total_cost = sum(t["device_seconds"] or 0.0 for t in trials)
    head += [
        "Each trial's best epoch has the highest robust accuracy on the validation split (images held out "
        "of the training split; each epoch is evaluated on its first `eval.max_examples`): `val robust`, "
        "which also picks the best trial (★). Natural, robust and stability are those weights read once "
        "on the whole test split when the trial finished (– for a trial stopped early or failed; `test n` "
        "images), in % with 95 % Wilson intervals. robust = PGD attack of the evaluation settings; "
        "l_nat/l_rob = ζ of the last epoch; every epoch's validation figures are in epochs.parquet.",
        "",
    ]
    if interrupted := [t for t in trials if t["status"] in ("interrupted", "running")]:
        head += [f"**This search is incomplete**: it was interrupted with {len(interrupted)} trial(s) unfinished "
                 f"({sum(t['status'] == 'finished' for t in trials)} finished); the same command with `--resume` "
                 "continues it, each trial from its last recorded epoch.", ""]  # fmt: skip
    if chosen_on_test(trials):
        head += ["**Trials begun by wartune 0.2.0 or before chose their best epoch on the test split**, which then "
                 "tested them too: their `val robust` is a test figure and their test figures are optimistic.", ""]  # fmt: skip
    head += [
        markdown_table(columns(trials), rows(trials)),
        "",
        f"Compute: {total_cost:.0f} device-seconds over {len(trials)} trials.",
        "",
    ]
    return "\n".join(head)


def autoattack_lines(trials: list[dict[str, Any]]) -> list[str]:
    """The best trial under both rules, when the search's end attacked trials with AutoAttack."""
    by_aa, best = best_by_autoattack(trials), best_trial(trials)
    if by_aa is None or best is None:
        return []
    return [
        f"Best by validation PGD-20: **{best['trial_id']}** (test robust {pct(best['test_rob_acc'])} %, AutoAttack "
        f"{pct(best.get('aa_rob_acc'))} %); best by test AutoAttack: **{by_aa['trial_id']}** (AutoAttack "
        f"{pct(by_aa['aa_rob_acc'])} %, test robust {pct(by_aa['test_rob_acc'])} %): a test figure, to read, not to choose by. "
        f"AutoAttack: standard L∞ AutoAttack (APGD-CE, APGD-T, FAB-T, Square) on the best weights, all "
        f"{by_aa['aa_examples']} test examples, for the best trials by PGD-20 (`final_attack_top`; – not attacked).",
        "",
    ]


def width_blocks(trials: list[dict[str, Any]]) -> list[tuple[str, list[str], list[list[str]]]]:
    """The paper's Table 1 layout: for robust, natural and stability, rows λ × columns width.

    Only fixed-λ finished trials count, a cell's repeats over seeds as mean ± sd of their test
    figures; the last row of each block marks the best λ per width (by mean validation robust
    accuracy). Empty when the search trained a single width.
    """
    fixed = [t for t in trials if t["lambda_setting"] is not None and t["status"] == "finished"]
    widths = sorted({t["width"] for t in fixed})
    lambdas = sorted({t["lambda_setting"] for t in fixed})
    if len(widths) < 2:
        return []
    cell = group(fixed, key=lambda t: (t["lambda_setting"], t["width"]))
    best = {w: max((k for k in cell if k[1] == w), key=lambda k: mean_of(cell[k], "val_rob_acc")) for w in widths}
    header = ["λ"] + [f"width {w:g}" for w in widths]
    blocks = []
    for metric, title in (("test_rob_acc", "robust"), ("test_nat_acc", "natural"), ("test_stability", "stability")):
        body = []
        for lam in lambdas:
            row = [f"{lam:g}"]
            for w in widths:
                repeats = cell.get((lam, w))
                star = " ★" if best[w] == (lam, w) else ""
                row.append(MeanSd.of(t[metric] for t in repeats).text(100) + star if repeats else "–")
            body.append(row)
        blocks.append((title, header, body))
    blocks.append(("best λ per width", header[1:], [[f"{best[w][0]:g}" for w in widths]]))
    return blocks


def seed_rows(trials: list[dict[str, Any]]) -> list[list[str]]:
    """One text row per setting (strategy, model, λ or WAR's ζ): mean ± sd over its seeds."""
    out = []
    for repeats in group(trials).values():
        done = [t for t in repeats if t["status"] == "finished"]
        first = repeats[0]
        setting = f"{first['lambda_setting']:.3g}" if first["lambda_setting"] is not None else f"WAR ζ={num(first.get('zeta_used'))}"
        out.append(
            [
                first["strategy"], first["model"], setting,
                MeanSd.of(t["lambda_final"] for t in done).text(),
                *(MeanSd.of(t[m] for t in done).text(100) for m in ("test_nat_acc", "test_rob_acc", "test_stability")),
                f"{len(done)}/{len(repeats)}", num(sum(t["device_seconds"] or 0.0 for t in repeats), "{:.0f}"),
            ]
        )  # fmt: skip
    return out


SEED_COLUMNS = ("strategy", "model", "λ", "final λ", "natural", "robust", "stability", "seeds done", "cost s")


def seed_markdown(trials: list[dict[str, Any]]) -> str:
    """The mean ± sd table, when the search repeated its settings over seeds (else empty)."""
    if not repeated(trials):
        return ""
    seeds = ", ".join(str(s) for s in seeds_of(trials))
    return "\n".join(
        [
            f"## Mean ± sd over seeds {seeds}",
            "",
            "Each setting's finished repeats: mean ± sample standard deviation of the test figures in %; cost summed over seeds.",
            "",
            markdown_table(SEED_COLUMNS, seed_rows(trials)),
            "",
        ]
    )


OBJECTIVE_NAMES = {"rob_acc": "robust accuracy", "nat_acc": "natural accuracy", "stability": "stability"}
FRONT_COLUMNS = ("trial", "model", "λ", "natural", "robust", "stability")


def front_markdown(trials: list[dict[str, Any]]) -> str:
    """The trials on the trade-off front (trials.parquet's `pareto`), best first objective
    first; empty when none is marked (no finished trial, or a table from before the column)."""
    front = [t for t in trials if t.get("pareto")]
    if not front:
        return ""
    by = front[0]["pareto_by"].split(",")
    front.sort(key=lambda t: (t["model"], -t[objective_column(by[0])]))
    body = [[t["trial_id"], t["model"], lambda_text(t), *(pct_ci(t, m) for m in ("test_nat_acc", "test_rob_acc", "test_stability"))]
            for t in front]  # fmt: skip
    return "\n".join(
        [
            "## Trade-off front",
            "",
            f"The finished trials that no other finished trial of the same model beats on every one of "
            f"{', '.join(OBJECTIVE_NAMES.get(b, b) for b in by)} on the validation split (Pareto-optimal; "
            "their test figures in %): "
            "what λ trades off, beyond the single best trial above.",
            "",
            markdown_table(FRONT_COLUMNS, body),
            "",
        ]
    )


def width_markdown(trials: list[dict[str, Any]]) -> str:
    parts = []
    for title, header, body in width_blocks(trials):
        parts += [f"### {title} (%)" if title != "best λ per width" else f"### {title}", "", markdown_table(header, body), ""]
    return "\n".join(parts)


def rich_width_tables(trials: list[dict[str, Any]]) -> list[Table]:
    tables = []
    for title, header, body in width_blocks(trials):
        table = Table(title=title + (" (%)" if title != "best λ per width" else ""))
        for col in header:
            table.add_column(col, justify="right")
        for row in body:
            table.add_row(*row)
        tables.append(table)
    return tables


def write_summary(folder: Path, name: str, trials: list[dict[str, Any]]) -> Path:
    path = folder / SUMMARY_FILE
    text = summary_markdown(name, trials)
    if seeds := seed_markdown(trials):
        text += "\n" + seeds
    if front := front_markdown(trials):
        text += "\n" + front
    widths = width_markdown(trials)
    if widths:
        text += "\n## λ × width (the paper's Table 1 layout; ★ best λ per width)\n\n" + widths
    path.write_text(text)
    return path

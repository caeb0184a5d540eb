"""How numbers and tables read in summaries, compare tables and the terminal: one rule each."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from wartune.results.intervals import proportion_interval
from wartune.results.trials import is_finite

MISSING = "–"


def pct(value: float | None) -> str:
    """A fraction as a percentage with two decimals (`0.6672` → `66.72`); `–` when unknown."""
    return f"{100 * value:.2f}" if is_finite(value) else MISSING


def num(value: float | None, fmt: str = "{:.2f}") -> str:
    """A number in `fmt`; `–` when unknown or not finite."""
    return fmt.format(value) if is_finite(value) else MISSING


def lambda_text(t: Mapping[str, Any]) -> str:
    """A trial's λ: the fixed value (3 significant digits), or `WAR→` its final λ_t."""
    if t["lambda_setting"] is None:
        return f"WAR→{num(t['lambda_final'])}"
    return f"{t['lambda_setting']:.3g}"


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def interval_of(t: Mapping[str, Any], column: str) -> tuple[float | None, float | None]:
    """The 95 % interval of a `<split>_<figure>` column of a trials row: its `_lo` / `_hi`
    columns, or Wilson's on `<split>_examples` where a table from before held none."""
    lo, hi = t.get(f"{column}_lo"), t.get(f"{column}_hi")
    if is_finite(lo) and is_finite(hi):
        return lo, hi
    split = column.split("_", 1)[0]
    return proportion_interval(t.get(column), t.get(f"{split}_examples"))


def pct_ci(t: Mapping[str, Any], column: str) -> str:
    """A figure in % with its 95 % interval, one decimal each: `66.1 (61.1–70.8)`; `–` when unknown."""
    value = t.get(column)
    if not is_finite(value):
        return MISSING
    lo, hi = interval_of(t, column)
    if not (is_finite(lo) and is_finite(hi)):
        return f"{100 * value:.1f}"
    return f"{100 * value:.1f} ({100 * lo:.1f}–{100 * hi:.1f})"

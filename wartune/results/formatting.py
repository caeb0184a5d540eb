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


def ci_text(value: float | None, lo: float | None, hi: float | None, signed: bool = False) -> str:
    """A fraction and its interval in % with one decimal: `66.1 (61.1–70.8)`, signed differences
    as `-1.4 (-4.9 to +2.1)`; the value alone where the interval is unknown; `–` without a value."""
    if not is_finite(value):
        return MISSING
    fmt = "{:+.1f}" if signed else "{:.1f}"
    text = fmt.format(100 * value)
    if not (is_finite(lo) and is_finite(hi)):
        return text
    between = " to " if signed else "–"
    return f"{text} ({fmt.format(100 * lo)}{between}{fmt.format(100 * hi)})"


def pct_ci(t: Mapping[str, Any], column: str) -> str:
    """A figure in % with its 95 % interval, one decimal each: `66.1 (61.1–70.8)`; `–` when unknown."""
    return ci_text(t.get(column), *interval_of(t, column)) if is_finite(t.get(column)) else MISSING

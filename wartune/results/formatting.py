"""How numbers and tables read in summaries, compare tables and the terminal: one rule each."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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

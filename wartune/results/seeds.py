"""Repeats of one setting over seeds, folded into mean ± standard deviation: the one rule.

`--seeds N` trains every setting (a model with a fixed λ, or a WAR spec) with seeds
seed..seed+N−1. The paper's tables report mean ± sd over repeats, so the summary, the
λ × width tables, the ζ calibration and compare's table all fold repeats the same way:
the sample standard deviation (n − 1), none for a single run, costs summed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from wartune.results.trials import is_finite


@dataclass(frozen=True)
class MeanSd:
    """The mean and sample standard deviation of the finite values among n repeats."""

    mean: float | None
    sd: float | None
    n: int

    @classmethod
    def of(cls, values: Iterable[Any]) -> MeanSd:
        finite = [float(v) for v in values if is_finite(v)]
        if not finite:
            return cls(None, None, 0)
        sd = statistics.stdev(finite) if len(finite) > 1 else None
        return cls(statistics.fmean(finite), sd, len(finite))

    def text(self, scale: float = 1.0, fmt: str = "{:.2f}") -> str:
        """`66.39 ± 1.20` (scaled, e.g. 100 for a percentage); just the mean for one run; `–` for none."""
        if self.mean is None:
            return "–"
        mean = fmt.format(self.mean * scale)
        return mean if self.sd is None else f"{mean} ± {fmt.format(self.sd * scale)}"


def setting_key(t: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes two trials repeats of one setting: the same strategy, model and λ (or WAR's ζ)."""
    return (t["strategy"], t["model"], t["lambda_setting"], t.get("zeta_used"))


def group(rows: Iterable[Mapping[str, Any]], key: Callable[[Mapping[str, Any]], Hashable] = setting_key) -> dict[Hashable, list[Any]]:
    """Rows grouped by `key`, in first-seen order."""
    groups: dict[Hashable, list[Any]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    return groups


def seeds_of(rows: Iterable[Mapping[str, Any]]) -> list[int]:
    return sorted({int(r["seed"]) for r in rows if r.get("seed") is not None})


def repeated(rows: Iterable[Mapping[str, Any]]) -> bool:
    """Whether the rows hold more than one seed (tables then show mean ± sd)."""
    return len(seeds_of(rows)) > 1


def mean_of(rows: list[Mapping[str, Any]], column: str) -> float:
    """The mean of a column over repeats (−inf when none is finite, so it ranks last)."""
    m = MeanSd.of(r[column] for r in rows).mean
    return -math.inf if m is None else m

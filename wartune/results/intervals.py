"""95 % intervals for the accuracies wartune reports, and compact per-example flags.

Robust accuracy, natural accuracy and stability are proportions of test examples, so a
table that prints "robust 47.3 %" without an interval invites reading a 0.4-point gap as
a real one. This module gives the intervals that tables and reports print beside them:

- `wilson` / `proportion_interval`: one accuracy on n examples (Wilson score interval,
  which stays inside [0, 1] and keeps its coverage near 0 % and 100 %, unlike p ± 1.96·se);
- `paired_difference`: two models scored on the *same* examples (Newcombe's method 10),
  which is much narrower than treating the two accuracies as independent, because most
  examples are right (or wrong) for both models;
- `mean_interval`: a mean across seeds with a Student-t interval (few seeds, unknown sd);
- `pack_flags` / `unpack_flags`: the per-example booleans a paired comparison needs,
  stored 8 to a byte so a Parquet column holds 10,000 flags in 1,250 bytes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# The two-sided 95 % normal quantile, Φ⁻¹(0.975); written out so no caller needs scipy for it.
Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for successes/n, clipped to [0, 1].

    Wilson (1927) rather than the Wald p ± z·se: accuracies near 0 or 1 (clean accuracy
    on digits, robust accuracy under a strong attack) are where Wald collapses to zero
    width or leaves [0, 1]. n == 0 gives (nan, nan): there is nothing to estimate.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, n={n}], got {successes}")
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n)) / denom
    # At 0 (or n) successes the bound is exactly 0 (or 1); say so rather than leave 1e-17.
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return (lo, hi)


def proportion_interval(p: float | None, n: int | None) -> tuple[float | None, float | None]:
    """The Wilson interval of an accuracy recorded as a fraction p of n examples.

    Tables hold the accuracy and its example count, not the count of successes, so this
    recovers successes = round(p·n). A missing accuracy (None, NaN) or count (None, 0)
    gives (None, None): a blank cell, not an error.
    """
    if p is None or not n:
        return (None, None)
    p = float(p)
    if math.isnan(p):
        return (None, None)
    n = int(n)
    return wilson(round(p * n), n)


@dataclass(frozen=True)
class PairedDifference:
    """p_a − p_b on the same n examples, with its 95 % interval and discordant counts.

    only_a / only_b (the examples exactly one model gets right) are kept because they are
    all the evidence there is about the difference: the examples both get right or both
    get wrong say nothing about which model is better.
    """

    diff: float
    lo: float
    hi: float
    n: int
    only_a: int
    only_b: int

    @property
    def within_noise(self) -> bool:
        """True when the interval holds 0: the data cannot tell the two models apart."""
        return self.lo <= 0.0 <= self.hi

    def text(self, scale: float = 100, digits: int = 1) -> str:
        """The difference and interval as a table shows them, e.g. '+1.4 [-0.8, +3.6]'.

        Signed, so a reader sees at a glance which model is ahead and whether the interval
        crosses 0; scale 100 gives percentage points.
        """

        def f(v: float) -> str:
            return f"{v * scale:+.{digits}f}"

        return f"{f(self.diff)} [{f(self.lo)}, {f(self.hi)}]"


def _as_bool_array(flags: Any, name: str = "flags") -> np.ndarray:
    """Per-example flags as a 1-D numpy bool array (numpy, a sequence, or a torch tensor).

    Torch is not imported here: a tensor is recognised by its `.numpy()` and brought to the
    CPU first. Integers other than 0/1 are refused, since a count mistaken for a flag
    would silently become True.
    """
    if not isinstance(flags, np.ndarray) and hasattr(flags, "numpy"):
        t = flags.detach() if hasattr(flags, "detach") else flags
        flags = t.cpu().numpy() if hasattr(t, "cpu") else t.numpy()
    arr = np.asarray(flags)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype != np.bool_:
        if arr.size and not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must be booleans (or 0/1), got dtype {arr.dtype}")
        arr = arr.astype(np.bool_)
    return arr


def paired_difference(
    a: Sequence[bool] | np.ndarray, b: Sequence[bool] | np.ndarray, z: float = Z95
) -> PairedDifference:
    """p_a − p_b for two sets of per-example flags on the same examples, with Newcombe's interval.

    Method 10 of Newcombe RG, "Improved confidence intervals for the difference between
    binomial proportions based on paired data", Statistics in Medicine 17:2635–2650 (1998):
    the square-and-add (MOVER) interval built from the Wilson intervals (l1, u1) of p_a and
    (l2, u2) of p_b, with the correlation between the two estimates taken into account:

        lo = D − sqrt((p_a − l1)² − 2φ(p_a − l1)(u2 − p_b) + (u2 − p_b)²)
        hi = D + sqrt((u1 − p_a)² − 2φ(u1 − p_a)(p_b − l2) + (p_b − l2)²)

    with cells e = both right, f = only a, g = only b, h = neither, and
    φ = (eh − fg − n/2) / sqrt((e+f)(g+h)(e+g)(f+h)) when eh − fg > n/2, 0 when
    0 ≤ eh − fg ≤ n/2, and (eh − fg) / sqrt(...) when eh < fg: Newcombe's adjusted φ, the
    one that reproduces his published method-10 intervals (and the one Fagerland, Lydersen
    & Laake use); φ = 0 when a margin is empty. This is the "McNemar-style" interval: two
    models scored on the same test images are strongly correlated, and ignoring that
    (φ = 0, or two unpaired intervals) overstates the noise in a difference of accuracies.
    """
    fa = _as_bool_array(a, "a")
    fb = _as_bool_array(b, "b")
    if fa.shape != fb.shape:
        raise ValueError(f"a and b must flag the same examples: lengths {fa.size} and {fb.size}")
    n = int(fa.size)
    if n == 0:
        raise ValueError("a and b are empty: no examples to compare")
    e = int(np.count_nonzero(fa & fb))
    f = int(np.count_nonzero(fa & ~fb))
    g = int(np.count_nonzero(~fa & fb))
    h = n - e - f - g
    pa, pb = (e + f) / n, (e + g) / n
    l1, u1 = wilson(e + f, n, z)
    l2, u2 = wilson(e + g, n, z)
    margins = (e + f) * (g + h) * (e + g) * (f + h)  # Python ints: no overflow at any n
    cross = e * h - f * g
    if margins == 0:
        phi = 0.0
    elif cross > n / 2:
        phi = (cross - n / 2) / math.sqrt(margins)
    elif cross >= 0:
        phi = 0.0
    else:
        phi = cross / math.sqrt(margins)
    d = pa - pb
    dl, ul = pa - l1, u2 - pb
    du, ll = u1 - pa, pb - l2
    lo = d - math.sqrt(max(0.0, dl * dl - 2 * phi * dl * ul + ul * ul))
    hi = d + math.sqrt(max(0.0, du * du - 2 * phi * du * ll + ll * ll))
    return PairedDifference(diff=d, lo=max(-1.0, lo), hi=min(1.0, hi), n=n, only_a=f, only_b=g)


def mean_interval(values: Iterable[float | None]) -> tuple[float, float, float] | None:
    """The mean across seeds and its 95 % Student-t interval, as (mean, lo, hi).

    Student t, not the normal: with 3–5 seeds the sd is itself a guess, and t(0.975, 2)
    = 4.30 against 1.96 says how much of one. Non-finite values (a seed that diverged,
    a missing cell) are left out. One value gives (mean, nan, nan); none gives None.
    """
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return None
    m = math.fsum(xs) / len(xs)
    if len(xs) < 2:
        return (m, math.nan, math.nan)
    from scipy import stats  # here, not at the top: most callers of this module never need it

    arr = np.asarray(xs)
    se = float(arr.std(ddof=1)) / math.sqrt(len(xs))
    half = float(stats.t.ppf(0.975, len(xs) - 1)) * se
    return (m, m - half, m + half)


def pack_flags(flags: Any) -> bytes:
    """Per-example booleans, 8 to a byte (big bit order: the first flag is the top bit).

    A paired comparison needs each model's per-example flags; packed, 10,000 of them fit
    in 1,250 bytes of a Parquet binary column. Accepts numpy, a sequence, or a torch tensor.
    """
    return np.packbits(_as_bool_array(flags), bitorder="big").tobytes()


def unpack_flags(data: bytes, n: int) -> np.ndarray:
    """The n flags `pack_flags` stored, as a numpy bool array.

    n must be given (the last byte is padded) and must match the byte count, ceil(n/8):
    a mismatch means the flags and their count come from different rows.
    """
    if n < 0 or len(data) != (n + 7) // 8:
        raise ValueError(
            f"{len(data)} bytes cannot hold exactly {n} flags (need {(max(n, 0) + 7) // 8})"
        )
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=n, bitorder="big")
    return bits.astype(np.bool_)

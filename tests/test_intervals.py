"""Intervals for accuracies: Wilson, Newcombe's paired difference, seed means, packed flags.

Every number pinned here is either published (Newcombe 1998's worked examples, Fagerland
et al.'s, Tango's) or worked by hand in the comment beside it, and the paired interval is
also checked against a second, independent computation written in plain Python below.
"""

import math
import random

import numpy as np
import pytest

from wartune.results.intervals import (
    Z95,
    PairedDifference,
    mean_interval,
    pack_flags,
    paired_difference,
    proportion_interval,
    unpack_flags,
    wilson,
)


def _r4(pair):
    return tuple(round(v, 4) for v in pair)


def _table(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-example flags for a paired 2x2 table (both right, only a, only b, neither)."""
    a = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    b = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    return np.array(a), np.array(b)


# ---------------------------------------------------------------- Wilson


def test_z95_is_the_normal_quantile():
    from scipy import stats

    assert Z95 == pytest.approx(stats.norm.ppf(0.975), abs=1e-12)


def test_wilson_newcombe_1998_worked_examples():
    # Wilson (1927) by hand: p = x/n, c = 1 + z²/n,
    #   centre = (p + z²/2n) / c,   half = z·sqrt(p(1−p)/n + z²/4n²) / c.
    # 81/263: p = 0.307985, z² = 3.841459, c = 1.014606,
    #   centre = 0.315288 / 1.014606 = 0.310749, half = 0.055461 -> 0.2553 to 0.3662,
    # the interval Newcombe (Stat Med 17:857–872, 1998, Table II) prints for 81/263.
    assert _r4(wilson(81, 263)) == (0.2553, 0.3662)
    # The rest of that table: 15/148, 0/20, 1/29 (Wilson, no continuity correction).
    assert _r4(wilson(15, 148)) == (0.0624, 0.1605)
    assert _r4(wilson(0, 20)) == (0.0, 0.1611)
    assert _r4(wilson(1, 29)) == (0.0061, 0.1718)


def test_wilson_at_the_edges_is_exact():
    # x = 0: centre = half, so lo = 0 exactly and hi = z²/(n + z²) = 3.841459/13.841459.
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775328, abs=1e-7)
    # x = n mirrors it: hi = 1 exactly and lo = n/(n + z²).
    lo, hi = wilson(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.7224672, abs=1e-7)
    # By the formula, lo at n = 3 comes out 5.6e-17 and hi at n = 13 0.9999999999999999;
    # a table of "0 % [0.0, …]" must not print a bound of 5e-17.
    for n in range(1, 200):
        assert wilson(0, n)[0] == 0.0 and wilson(n, n)[1] == 1.0


def test_wilson_z_is_used():
    # A wider z gives a wider interval around the same centre-ish point; z = 0 collapses to p.
    assert wilson(81, 263, z=0.0) == pytest.approx((81 / 263, 81 / 263))
    lo95, hi95 = wilson(81, 263)
    lo99, hi99 = wilson(81, 263, z=2.5758293035489)
    assert lo99 < lo95 and hi99 > hi95


def test_wilson_empty_and_bad_counts():
    assert all(math.isnan(v) for v in wilson(0, 0))
    for x, n in [(-1, 10), (11, 10)]:
        with pytest.raises(ValueError, match="successes must lie in"):
            wilson(x, n)
    with pytest.raises(ValueError, match="n must be"):
        wilson(1, -1)


def test_proportion_interval_from_a_recorded_accuracy():
    # 0.30798 of 263 is 81 successes: the same interval as wilson(81, 263).
    assert _r4(proportion_interval(81 / 263, 263)) == (0.2553, 0.3662)
    assert proportion_interval(0.5, 10) == wilson(5, 10)
    # 0.29 * 100 is 28.999999999999996 in floating point: rounded, not truncated, to 29.
    assert proportion_interval(0.29, 100) == wilson(29, 100)
    for p, n in [(None, 100), (math.nan, 100), (0.5, None), (0.5, 0)]:
        assert proportion_interval(p, n) == (None, None)
    with pytest.raises(ValueError):
        proportion_interval(1.5, 100)


# ---------------------------------------------------------------- paired difference


def _wilson_by_bisection(x: int, n: int, z: float) -> tuple[float, float]:
    """Wilson's bounds as the roots of (p − π)² = z²π(1 − π)/n, found by bisection.

    Independent of the closed form in the module: the score test inverted numerically.
    """
    p = x / n

    def outside(pi: float) -> bool:
        return (p - pi) ** 2 > z * z * pi * (1 - pi) / n

    def root(inside: float, out: float) -> float:
        for _ in range(200):
            mid = (inside + out) / 2
            if outside(mid):
                out = mid
            else:
                inside = mid
        return (inside + out) / 2

    lo = 0.0 if x == 0 else root(p, 0.0)
    hi = 1.0 if x == n else root(p, 1.0)
    return lo, hi


def _newcombe10_by_hand(a, b, z=Z95, phi="newcombe") -> tuple[float, float, float]:
    """Newcombe's method 10 again, from plain Python lists and the paper's own notation.

    phi="pearson" uses the unadjusted φ; phi="zero" ignores the pairing altogether.
    """
    e = f = g = h = 0
    for x, y in zip(a, b, strict=True):
        if x and y:
            e += 1
        elif x:
            f += 1
        elif y:
            g += 1
        else:
            h += 1
    n = e + f + g + h
    p1, p2 = (e + f) / n, (e + g) / n
    l1, u1 = _wilson_by_bisection(e + f, n, z)
    l2, u2 = _wilson_by_bisection(e + g, n, z)
    denom = math.sqrt((e + f) * (g + h) * (e + g) * (f + h))
    num = e * h - f * g
    if denom == 0 or phi == "zero":
        r = 0.0
    elif phi == "newcombe" and num > 0:
        r = max(num - n / 2, 0) / denom
    else:
        r = num / denom
    delta = math.sqrt((p1 - l1) ** 2 - 2 * r * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    eps = math.sqrt((u1 - p1) ** 2 - 2 * r * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    return p1 - p2, p1 - p2 - delta, p1 - p2 + eps


def test_paired_newcombe_1998_worked_example():
    # Newcombe (Stat Med 17:2635–2650, 1998), paired example e, f, g, h = 20, 12, 2, 16
    # (n = 50): D = (12 − 2)/50 = 0.2; Wilson 32/50 -> (0.5014, 0.7586), 22/50 ->
    # (0.3116, 0.5769); eh − fg = 296 > n/2, so φ = (296 − 25)/sqrt(32·18·22·28) = 0.4550.
    # Published method 10: 0.0562 to 0.3292 (the same numbers are pinned as Newcombe's
    # in the tests of the R package ratesci, and Fagerland et al.'s square-and-add uses
    # the same adjusted φ). The "−0.0381 to ..." once remembered for this example is from
    # Newcombe's *unpaired* paper (Stat Med 17:873–890, 5/56 vs 0/29: −0.0381 to 0.1926).
    r = paired_difference(*_table(20, 12, 2, 16))
    assert (r.n, r.only_a, r.only_b) == (50, 12, 2)
    assert r.diff == pytest.approx(0.2)
    assert _r4((r.lo, r.hi)) == (0.0562, 0.3292)
    assert r.text() == "+20.0 [+5.6, +32.9]"
    assert not r.within_noise
    # The independent version agrees. With the unadjusted Pearson φ = 296/sqrt(354816) =
    # 0.4969 it gives 0.0618 to 0.3242 (the interval ratesci's tests attribute to
    # Newcombe's method 8), and with φ = 0 (pairing ignored) 0.0052 to 0.3748: so the
    # published numbers pin both the φ term and Newcombe's n/2 adjustment of it.
    table = _table(20, 12, 2, 16)
    assert _r4(_newcombe10_by_hand(*table)[1:]) == (0.0562, 0.3292)
    assert _r4(_newcombe10_by_hand(*table, phi="pearson")[1:]) == (0.0618, 0.3242)
    assert _r4(_newcombe10_by_hand(*table, phi="zero")[1:]) == (0.0052, 0.3748)


@pytest.mark.parametrize(
    ("cells", "published"),
    [
        # Fagerland, Lydersen & Laake (Stat Med 33:2850, 2014; their book ch. 8), Newcombe
        # square-and-add: Bentur et al. 2009 and Cavo et al. 2012.
        ((1, 1, 7, 12), (-0.507, -0.026)),
        ((59, 6, 16, 80), (-0.119, -0.005)),
        # Tang, Li & Tang (SMMR 2010) Newcombe interval for (8, 3, 1, 2): −0.1574 to 0.4136.
        ((8, 3, 1, 2), (-0.157, 0.414)),
    ],
)
def test_paired_other_published_examples(cells, published):
    r = paired_difference(*_table(*cells))
    assert (round(r.lo, 3), round(r.hi, 3)) == published


def test_paired_matches_independent_computation():
    # 300 random tables, small and large, against the bisection-based version above.
    rng = random.Random(1998)
    for _ in range(300):
        n = rng.choice([1, 2, 5, 20, 200, 5000])
        a = [rng.random() < 0.7 for _ in range(n)]
        b = [x if rng.random() < 0.8 else rng.random() < 0.5 for x in a]
        r = paired_difference(np.array(a), b)
        d, lo, hi = _newcombe10_by_hand(a, b)
        assert (r.diff, r.lo, r.hi) == pytest.approx((d, lo, hi), abs=1e-9)
        assert r.lo <= r.diff <= r.hi


def test_paired_identical_flags_are_within_noise():
    a = np.array([True] * 70 + [False] * 30)
    r = paired_difference(a, a.copy())
    assert r.diff == 0.0 and (r.only_a, r.only_b) == (0, 0)
    assert r.lo < 0 < r.hi and r.within_noise
    # No discordant examples; eh − fg = 70·30 = 2100 > n/2, margins 70·30·70·30, so
    # φ = (2100 − 50)/2100 = 0.97619. Wilson 70/100 = (0.60415, 0.78105): p − l = 0.09585,
    # u − p = 0.08105, and both bounds are ±sqrt(0.09585² − 2φ·0.09585·0.08105 + 0.08105²)
    # = ±0.0243, against ±sqrt(0.09585² + 0.08105²) = ±0.126 if the pairing were ignored.
    assert (r.lo, r.hi) == pytest.approx((-0.02427, 0.02427), abs=1e-5)
    assert (r.lo, r.hi) == pytest.approx(_newcombe10_by_hand(a, a)[1:], abs=1e-9)


def test_paired_clearly_better_model_is_not_noise():
    a = np.ones(200, dtype=bool)
    b = np.array([True, False] * 100)
    r = paired_difference(a, b)
    assert r.diff == pytest.approx(0.5) and (r.only_a, r.only_b) == (100, 0)
    assert r.lo > 0 and not r.within_noise


def test_paired_swap_negates():
    a, b = _table(20, 12, 2, 16)
    ab, ba = paired_difference(a, b), paired_difference(b, a)
    assert ba.diff == pytest.approx(-ab.diff)
    assert (ba.lo, ba.hi) == pytest.approx((-ab.hi, -ab.lo))
    assert (ba.only_a, ba.only_b) == (ab.only_b, ab.only_a)
    assert ba.text() == "-20.0 [-32.9, -5.6]"


def test_paired_z_is_used():
    a, b = _table(20, 12, 2, 16)
    z99 = 2.5758293035489
    wide = paired_difference(a, b, z=z99)
    assert wide.lo < 0.0562 and wide.hi > 0.3292
    assert (wide.lo, wide.hi) == pytest.approx(_newcombe10_by_hand(a, b, z=z99)[1:], abs=1e-9)


def test_paired_difference_text_and_noise():
    r = PairedDifference(diff=0.014, lo=-0.008, hi=0.036, n=1000, only_a=30, only_b=16)
    assert r.text() == "+1.4 [-0.8, +3.6]" and r.within_noise
    assert r.text(scale=1, digits=3) == "+0.014 [-0.008, +0.036]"
    assert not PairedDifference(0.05, 0.001, 0.1, 100, 5, 0).within_noise
    # An interval that just reaches 0 still holds it.
    assert PairedDifference(0.05, 0.0, 0.1, 100, 5, 0).within_noise
    assert PairedDifference(-0.05, -0.1, 0.0, 100, 0, 5).within_noise


def test_paired_accepts_sequences_and_torch():
    torch = pytest.importorskip("torch")
    a, b = _table(20, 12, 2, 16)
    ref = paired_difference(a, b)
    assert paired_difference(a.tolist(), b.tolist()) == ref
    assert paired_difference(torch.from_numpy(a), torch.from_numpy(b)) == ref
    assert paired_difference(a.astype(int), b.astype(np.uint8)) == ref


def test_paired_bad_input():
    with pytest.raises(ValueError):
        paired_difference([True, False], [True])
    with pytest.raises(ValueError):
        paired_difference([], [])
    with pytest.raises(ValueError):
        paired_difference([0, 2], [1, 1])  # a count, not a flag
    with pytest.raises(ValueError):
        paired_difference(np.ones((2, 2), bool), np.ones((2, 2), bool))


# ---------------------------------------------------------------- seeds


def test_mean_interval_student_t():
    # [1, 2, 3]: mean 2, sd 1, se 1/√3; t(0.975, df 2) = 4.302653 -> 2 ± 2.484138.
    m, lo, hi = mean_interval([1.0, 2.0, 3.0])
    assert m == 2.0 and (round(lo, 4), round(hi, 4)) == (-0.4841, 4.4841)
    # Non-finite and missing values are left out, not propagated.
    assert mean_interval([1.0, math.nan, 2.0, None, math.inf, 3.0]) == (m, lo, hi)
    # Two values 0 and 1: se = 0.5, t(0.975, 1) = 12.706205 -> 0.5 ± 6.353102.
    m, lo, hi = mean_interval([0.0, 1.0])
    assert (m, round(lo, 4), round(hi, 4)) == (0.5, -5.8531, 6.8531)


def test_mean_interval_few_values():
    m, lo, hi = mean_interval([0.7])
    assert m == 0.7 and math.isnan(lo) and math.isnan(hi)
    assert mean_interval([]) is None
    assert mean_interval([math.nan, None]) is None


# ---------------------------------------------------------------- packed flags


@pytest.mark.parametrize("n", [1, 7, 8, 9, 10_000])
def test_pack_round_trip(n):
    rng = np.random.default_rng(n)
    flags = rng.random(n) < 0.5
    data = pack_flags(flags)
    assert isinstance(data, bytes) and len(data) == math.ceil(n / 8)
    back = unpack_flags(data, n)
    assert back.dtype == np.bool_ and back.shape == (n,)
    np.testing.assert_array_equal(back, flags)


def test_pack_layout_is_big_bit_order():
    # The first flag is the top bit of the first byte; the tail is zero-padded.
    assert pack_flags([True, False, False, False, False, False, False, True, True]) == bytes(
        [0x81, 0x80]
    )
    assert pack_flags([]) == b"" and unpack_flags(b"", 0).shape == (0,)


def test_pack_torch_tensor():
    torch = pytest.importorskip("torch")
    t = torch.tensor([True, False, True] * 5)
    assert pack_flags(t) == pack_flags(t.numpy())
    np.testing.assert_array_equal(unpack_flags(pack_flags(t), 15), t.numpy())


class _DeviceTensor:
    """Stands in for a CUDA tensor: no numpy view until it is brought to the CPU."""

    def __init__(self, cpu_tensor):
        self._cpu = cpu_tensor

    def detach(self):
        return self

    def cpu(self):
        return self._cpu

    def numpy(self):
        raise TypeError("can't convert cuda:0 device type tensor to numpy")

    def __array__(self, *args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy")

    def __len__(self):
        return len(self._cpu)


def test_pack_and_pair_bring_device_tensors_to_the_cpu():
    torch = pytest.importorskip("torch")
    a, b = _table(20, 12, 2, 16)
    ta, tb = _DeviceTensor(torch.from_numpy(a)), _DeviceTensor(torch.from_numpy(b))
    assert pack_flags(ta) == pack_flags(a)
    assert paired_difference(ta, tb) == paired_difference(a, b)


def test_pack_cuda_tensor():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    t = torch.tensor([True, False, True] * 5, device="cuda")
    assert pack_flags(t) == pack_flags(t.cpu().numpy())


def test_unpack_refuses_a_count_that_does_not_match():
    data = pack_flags([True] * 9)
    for n in (8, 17, -1):
        with pytest.raises(ValueError):
            unpack_flags(data, n)

"""Intervals and paired tests: the one place the course's statistics live.

- one share (a refusal rate, an accuracy): Wilson score interval (scipy's ``binomtest``);
- a change in a yes/no outcome on the same prompts (refused before, refused after): Newcombe's
  hybrid score interval for a paired difference of proportions (Newcombe 1998, method 10), and
  McNemar's exact test on the discordant pairs. A percentile bootstrap would say 0% [0%, 0%] for
  a model that refused none of 24 prompts; these do not;
- a mean of graded scores (a 1-5 rating, a win probability): scipy's bootstrap (bias-corrected
  and accelerated), and its paired form (items resampled together) for a difference on the same
  items.
"""

from __future__ import annotations

import math
from statistics import fmean


def proportion_ci(successes: int, n: int) -> tuple[float, float, float]:
    """A share with its Wilson 95% interval: ``(share, low, high)``; NaNs when n is 0.

    >>> [round(x, 3) for x in proportion_ci(8, 10)]
    [0.8, 0.49, 0.943]
    >>> [round(x, 3) for x in proportion_ci(0, 24)]
    [0.0, 0.0, 0.138]
    """
    if n == 0:
        return (math.nan, math.nan, math.nan)
    from scipy.stats import binomtest

    ci = binomtest(int(successes), int(n)).proportion_ci(0.95, method="wilson")
    return (successes / n, float(ci.low), float(ci.high))


def share_ci(values: list[float]) -> dict:
    """``{"mean", "ci95", "n"}`` for 0/1 outcomes, with the Wilson interval.

    >>> share_ci([0.0] * 24)["ci95"]
    [0.0, 0.138]
    """
    n = len(values)
    p, low, high = proportion_ci(int(sum(values)), n)
    return {"mean": p, "ci95": [round(low, 4), round(high, 4)], "n": n}


def newcombe_paired(before: list[float], after: list[float]) -> dict:
    """``after - before`` for paired 0/1 outcomes: the difference in shares with Newcombe's
    hybrid score 95% interval, McNemar's exact p-value, the discordant counts, n, and whether
    the interval excludes 0.

    >>> d = newcombe_paired([0] * 24, [1] * 18 + [0] * 6)
    >>> d["diff"], [round(x, 3) for x in d["ci95"]], d["significant"]
    (0.75, [0.508, 0.88], True)
    >>> newcombe_paired([0, 1, 0, 1], [0, 1, 0, 1])["significant"]
    False
    """
    if len(before) != len(after):
        raise ValueError(f"a paired interval needs the same items: {len(before)} vs {len(after)}")
    n = len(before)
    if n == 0:
        return {"diff": math.nan, "ci95": [math.nan, math.nan], "n": 0, "significant": False}
    both = sum(1 for b, a in zip(before, after) if a and b)
    gained = sum(1 for b, a in zip(before, after) if a and not b)  # yes after, no before
    lost = sum(1 for b, a in zip(before, after) if b and not a)
    neither = n - both - gained - lost
    p_after, p_before = (both + gained) / n, (both + lost) / n
    _, l1, u1 = proportion_ci(both + gained, n)
    _, l2, u2 = proportion_ci(both + lost, n)
    denom = (both + gained) * (neither + lost) * (both + lost) * (neither + gained)
    phi = 0.0 if denom == 0 else (both * neither - gained * lost) / math.sqrt(denom)
    diff = p_after - p_before
    low = diff - math.sqrt(max(0.0, (p_after - l1) ** 2 - 2 * phi * (p_after - l1) * (u2 - p_before)
                                + (u2 - p_before) ** 2))
    high = diff + math.sqrt(max(0.0, (u1 - p_after) ** 2 - 2 * phi * (u1 - p_after) * (p_before - l2)
                                 + (p_before - l2) ** 2))
    return {"diff": diff, "ci95": [max(-1.0, low), min(1.0, high)], "n": n,
            "gained": gained, "lost": lost, "p_mcnemar": mcnemar_p(gained, lost),
            "significant": low > 0 or high < 0}


def mcnemar_p(gained: int, lost: int) -> float:
    """McNemar's exact two-sided p-value from the discordant counts.

    >>> mcnemar_p(0, 0), round(mcnemar_p(10, 0), 4)
    (1.0, 0.002)
    """
    if gained + lost == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(gained, gained + lost, 0.5).pvalue)


def bootstrap_ci(values: list[float], n_boot: int = 2000, seed: int = 0) -> dict:
    """The mean with a 95% bootstrap interval (scipy's ``bootstrap``, bias-corrected and
    accelerated, seeded) and n. Values without spread give the mean as both ends (every resample
    has that mean); where BCa is undefined the percentile interval is used.

    >>> bootstrap_ci([1, 1, 1, 1])
    {'mean': 1.0, 'ci95': [1.0, 1.0], 'n': 4}
    >>> bootstrap_ci([])["n"]
    0
    """
    n = len(values)
    if n == 0:
        return {"mean": math.nan, "ci95": [math.nan, math.nan], "n": 0}
    mean = fmean(values)
    if min(values) == max(values):
        return {"mean": mean, "ci95": [mean, mean], "n": n}
    low, high = _bootstrap((values,), lambda x, axis=-1: x.mean(axis=axis), n_boot, seed)
    return {"mean": mean, "ci95": [low, high], "n": n}


def _bootstrap(data: tuple, statistic, n_boot: int, seed: int, paired: bool = False) -> tuple[float, float]:
    """scipy's BCa interval, falling back to the percentile one where BCa is undefined."""
    import warnings

    import numpy as np
    from scipy.stats import bootstrap

    arrays = tuple(np.asarray(d, dtype=float) for d in data)
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa's degenerate-data warning: handled below
            ci = bootstrap(arrays, statistic, n_resamples=n_boot, method=method, paired=paired,
                           vectorized=True, rng=np.random.default_rng(seed)).confidence_interval
        if not (math.isnan(ci.low) or math.isnan(ci.high)):
            break
    return float(ci.low), float(ci.high)


def paired_bootstrap(base: list[float], other: list[float], n_boot: int = 2000,
                     seed: int = 0) -> dict:
    """``other - base`` on the same items: the mean difference with a paired 95% bootstrap
    interval (scipy's ``bootstrap`` with ``paired=True``: items are resampled together; BCa),
    n, and whether the interval excludes 0.

    >>> d = paired_bootstrap([0, 0, 0, 0], [1, 1, 1, 0])
    >>> d["diff"], d["n"], d["significant"]
    (0.75, 4, True)
    """
    if len(base) != len(other):
        raise ValueError(f"paired bootstrap needs the same items: {len(base)} vs {len(other)}")
    diffs = [b - a for a, b in zip(base, other)]
    n = len(diffs)
    if n == 0:
        return {"diff": math.nan, "ci95": [math.nan, math.nan], "n": 0, "significant": False}
    diff = fmean(diffs)
    if min(diffs) == max(diffs):
        low = high = diff
    else:
        low, high = _bootstrap((base, other), lambda a, b, axis=-1: (b - a).mean(axis=axis),
                               n_boot, seed, paired=True)
    return {"diff": diff, "ci95": [low, high], "n": n, "significant": low > 0 or high < 0}

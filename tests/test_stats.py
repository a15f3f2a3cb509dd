"""Intervals: Wilson for one share, Newcombe for a paired change in a share, bootstrap for means."""

import random

import pytest

from cai_utils.stats import (bootstrap_ci, mcnemar_p, newcombe_paired, paired_bootstrap,
                             proportion_ci, share_ci)


def test_wilson_gives_a_real_upper_bound_where_the_bootstrap_gives_zero():
    assert bootstrap_ci([0.0] * 24)["ci95"] == [0.0, 0.0]
    share, low, high = proportion_ci(0, 24)
    assert share == 0 and low == 0 and 0.12 < high < 0.15
    assert share_ci([1.0] * 24)["ci95"][0] == pytest.approx(1 - high, abs=1e-3)


def test_newcombe_excludes_zero_for_a_large_paired_change_and_not_for_none():
    big = newcombe_paired([0.0] * 24, [1.0] * 18 + [0.0] * 6)
    assert big["diff"] == 0.75 and big["significant"] and 0.45 < big["ci95"][0] < 0.75 < big["ci95"][1] < 0.95
    assert big["gained"] == 18 and big["lost"] == 0 and big["p_mcnemar"] < 1e-4
    none = newcombe_paired([1.0, 0.0] * 12, [0.0, 1.0] * 12)  # as many gained as lost
    assert none["diff"] == 0 and not none["significant"] and none["ci95"][0] < -0.1 < 0.1 < none["ci95"][1]


def test_newcombe_is_antisymmetric_and_pairs_matter():
    rng = random.Random(3)
    before = [float(rng.random() < 0.3) for _ in range(60)]
    after = [float(b or rng.random() < 0.4) for b in before]
    forward, backward = newcombe_paired(before, after), newcombe_paired(after, before)
    assert forward["diff"] == pytest.approx(-backward["diff"])
    assert forward["ci95"][0] == pytest.approx(-backward["ci95"][1])
    # the same shares, unpaired (shuffled), give a wider interval: pairing is used
    shuffled = after[:]
    rng.shuffle(shuffled)
    width = lambda d: d["ci95"][1] - d["ci95"][0]  # noqa: E731
    assert width(forward) < width(newcombe_paired(before, shuffled))


def test_newcombe_covers_the_true_change_about_95_percent_of_the_time():
    rng = random.Random(0)
    hits = 0
    for _ in range(400):
        before = [float(rng.random() < 0.2) for _ in range(40)]
        after = [float(rng.random() < 0.5) if not b else float(rng.random() < 0.9) for b in before]
        low, high = newcombe_paired(before, after)["ci95"]
        hits += low <= 0.2 * 0.9 + 0.8 * 0.5 - 0.2 <= high
    assert 0.90 <= hits / 400 <= 0.99


def test_mcnemar_and_bootstrap_basics():
    assert mcnemar_p(5, 5) == 1.0 and mcnemar_p(10, 0) < 0.01
    d = paired_bootstrap([3.0, 3.0, 3.0], [3.5, 3.5, 3.5])
    assert d["diff"] == pytest.approx(0.5) and d["significant"]
    with pytest.raises(ValueError, match="same items"):
        newcombe_paired([1.0], [1.0, 0.0])


def test_bootstrap_covers_a_skewed_mean_about_95_percent_of_the_time():
    rng = random.Random(1)
    hits, reps = 0, 200
    for i in range(reps):
        values = [rng.expovariate(1.0) for _ in range(30)]  # skewed, true mean 1
        low, high = bootstrap_ci(values, n_boot=1000, seed=i)["ci95"]
        hits += low <= 1.0 <= high
    assert 0.88 <= hits / reps <= 0.99
    paired = paired_bootstrap([0.0] * 30, [rng.expovariate(1.0) for _ in range(30)], n_boot=1000)
    assert paired["ci95"][0] < paired["diff"] < paired["ci95"][1] and paired["n"] == 30

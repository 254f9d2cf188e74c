"""megatron_prealign.stats against textbook values."""

import math

import pytest

from megatron_prealign import stats


def test_student_t_interval_of_a_mean():
    # 1..5: mean 3, s = sqrt(2.5), t(0.975, 4) = 2.776445 -> 3 -+ 2.776445 * sqrt(2.5 / 5)
    result = stats.summary([1, 2, 3, 4, 5])
    assert result.mean == 3 and result.std == pytest.approx(math.sqrt(2.5))
    half = 2.776445 * math.sqrt(2.5 / 5)
    assert result.ci95 == pytest.approx((3 - half, 3 + half), abs=1e-5)
    one = stats.summary([7.0])
    assert one.mean == 7.0 and math.isnan(one.std) and all(math.isnan(x) for x in one.ci95)


def test_wilson_interval_matches_newcombe_1998_and_the_evaluations_own():
    # Newcombe (1998), Statistics in Medicine 17:857, Table I: 81 / 263 -> 0.2553 to 0.3662.
    low, high = stats.proportion_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    # 0 / 10 -> 0 to 0.2775 (same table).
    assert stats.proportion_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    # The evaluations' intervals (CLKA, QA, zero-shot classification) are this one.
    from megatron_prealign.evaluation.common import wilson_interval

    assert wilson_interval(81, 263) == stats.proportion_interval(81, 263)


def test_exact_sign_test():
    # 9 of 10 pairs better: two-sided p = 2 * (C(10,9) + C(10,10)) / 2^10 = 22 / 1024.
    result = stats.paired_sign_test([1] * 9 + [0], [0] * 9 + [1])
    assert (result.wins, result.losses, result.ties) == (9, 1, 0)
    assert result.p_value == pytest.approx(22 / 1024)
    # 4 of 4 wins (the real-language claim of the earlier docs): one-sided 1/16, two-sided 1/8.
    assert stats.paired_sign_test([2, 2, 2, 2], [1, 1, 1, 1]).p_value == pytest.approx(0.125)
    tied = stats.paired_sign_test([1, 2], [1, 2])
    assert tied.ties == 2 and tied.p_value == 1.0


def test_paired_bootstrap_is_seeded_and_covers_the_mean():
    a = [0.52, 0.61, 0.58, 0.49, 0.66, 0.55, 0.60, 0.57]
    b = [0.50, 0.55, 0.57, 0.50, 0.60, 0.51, 0.58, 0.52]
    first, again = stats.paired_bootstrap(a, b, seed=3), stats.paired_bootstrap(a, b, seed=3)
    assert first == again
    assert first.mean == pytest.approx(sum(x - y for x, y in zip(a, b)) / len(a))
    assert first.ci95[0] < first.mean < first.ci95[1] and first.ci95[0] > 0  # every pair but one better
    assert stats.paired_bootstrap(a, a).ci95 == (0.0, 0.0)


def test_chance_level_and_bad_input():
    assert stats.chance_level(4) == 0.25 and stats.chance_level(12) == pytest.approx(1 / 12)
    with pytest.raises(ValueError):
        stats.chance_level(0)
    with pytest.raises(ValueError):
        stats.paired_sign_test([1, 2], [1])


def test_seed_item_bootstrap():
    import numpy as np

    rng = np.random.default_rng(1)
    # Three seeds whose effects differ (+0.05, +0.15, +0.25): the seed-and-item interval is wider
    # than the pooled one, which treats all 600 pairs as independent.
    groups_a = [(rng.random(200) < 0.3 + shift).astype(float) for shift in (0.05, 0.15, 0.25)]
    groups_b = [(rng.random(200) < 0.3).astype(float) for _ in range(3)]
    pooled = stats.paired_bootstrap(np.concatenate(groups_a), np.concatenate(groups_b))
    nested = stats.seed_item_bootstrap(groups_a, groups_b, seed=3)
    assert nested.mean == pytest.approx(pooled.mean)
    assert nested.ci95[0] <= nested.mean <= nested.ci95[1]
    assert nested.ci95[1] - nested.ci95[0] > 1.3 * (pooled.ci95[1] - pooled.ci95[0])
    assert stats.seed_item_bootstrap(groups_a, groups_b, seed=3) == nested  # seeded
    # One group: the ordinary paired bootstrap (same interval up to resampling noise).
    single = stats.seed_item_bootstrap(groups_a[:1], groups_b[:1])
    plain = stats.paired_bootstrap(groups_a[0], groups_b[0])
    assert single.ci95 == pytest.approx(plain.ci95, abs=0.02)
    # Groups without spread inside: the interval spans the group means' resampled averages.
    constant = stats.seed_item_bootstrap([[1.0] * 5, [0.0] * 5], [[0.0] * 5, [0.0] * 5])
    assert constant.mean == 0.5 and constant.ci95 == (0.0, 1.0)
    with pytest.raises(ValueError):
        stats.seed_item_bootstrap([[1.0]], [[1.0, 0.0]])

"""The statistics every report states: mean and spread over seeds, 95% intervals, paired tests
and chance levels, on `scipy.stats` (imported when used: command-line start-up stays light).

* :func:`summary`: mean, sample standard deviation and Student-t interval of values over seeds.
* :func:`proportion_interval`: Wilson score interval of an accuracy over items.
* :func:`paired_sign_test`: two-sided exact sign test of paired differences (ties dropped).
* :func:`paired_bootstrap`: mean paired difference with a seeded percentile bootstrap interval.
* :func:`seed_item_bootstrap`: the same for paired differences grouped by seed, resampling
  seeds and then items within them (a seed's runs share a base, so its items are not
  independent of each other).
* :func:`chance_level`: accuracy of guessing among ``n`` choices.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence, Tuple


@dataclasses.dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float  # sample standard deviation (n - 1); nan for one value
    ci95: Tuple[float, float]  # Student-t interval of the mean; nan for one value


def summary(values: Sequence[float], confidence: float = 0.95) -> Summary:
    from scipy import stats  # scipy is slow to import: only when a statistic is computed (here and below)

    values = [float(v) for v in values]
    if not values:
        raise ValueError("summary of no values")
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return Summary(1, mean, math.nan, (math.nan, math.nan))
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    if std == 0:
        return Summary(n, mean, 0.0, (mean, mean))
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=std / math.sqrt(n))
    return Summary(n, mean, std, (float(low), float(high)))


def proportion_interval(successes: int, total: int, confidence: float = 0.95) -> Tuple[float, float]:
    """Wilson score interval (scipy's ``binomtest(...).proportion_ci(method="wilson")``)."""
    from scipy import stats

    if total <= 0:
        return (math.nan, math.nan)
    interval = stats.binomtest(int(successes), int(total)).proportion_ci(confidence, method="wilson")
    return (float(interval.low), float(interval.high))


@dataclasses.dataclass(frozen=True)
class SignTest:
    wins: int  # pairs where a > b
    losses: int  # pairs where a < b
    ties: int
    p_value: float  # two-sided; 1.0 when every pair ties


def paired_sign_test(a: Sequence[float], b: Sequence[float]) -> SignTest:
    from scipy import stats

    if len(a) != len(b):
        raise ValueError(f"paired values of different lengths ({len(a)} and {len(b)})")
    wins = sum(x > y for x, y in zip(a, b))
    losses = sum(x < y for x, y in zip(a, b))
    ties = len(a) - wins - losses
    p = 1.0 if wins + losses == 0 else float(stats.binomtest(wins, wins + losses, 0.5).pvalue)
    return SignTest(wins, losses, ties, p)


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    mean: float  # mean of a - b
    ci95: Tuple[float, float]  # percentile bootstrap interval of that mean


def paired_bootstrap(a: Sequence[float], b: Sequence[float], resamples: int = 10000,
                     seed: int = 0, confidence: float = 0.95) -> PairedDifference:
    import numpy as np
    from scipy import stats

    if len(a) != len(b):
        raise ValueError(f"paired values of different lengths ({len(a)} and {len(b)})")
    differences = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if differences.size < 2 or np.all(differences == differences[0]):
        mean = float(differences.mean()) if differences.size else math.nan
        return PairedDifference(mean, (mean, mean))
    result = stats.bootstrap((differences,), np.mean, n_resamples=resamples, confidence_level=confidence,
                             method="percentile", random_state=np.random.default_rng(seed))
    return PairedDifference(float(differences.mean()),
                            (float(result.confidence_interval.low), float(result.confidence_interval.high)))


def seed_item_bootstrap(groups_a: Sequence[Sequence[float]], groups_b: Sequence[Sequence[float]],
                        resamples: int = 10000, seed: int = 0,
                        confidence: float = 0.95) -> PairedDifference:
    """Mean paired difference over all items of all groups (seeds), with a two-stage percentile
    bootstrap interval: each resample draws as many groups as there are, with replacement, then
    each drawn group's items with replacement (the cluster bootstrap of Davison & Hinkley 1997,
    sec. 3.8, with resampling at both stages). With few groups the interval reflects only the
    spread of those groups (3 seeds: 10 distinct seed draws)."""
    import numpy as np

    if len(groups_a) != len(groups_b) or not groups_a:
        raise ValueError("need the same number (>= 1) of groups of paired values")
    groups = []
    for a, b in zip(groups_a, groups_b):
        if len(a) != len(b) or not len(a):
            raise ValueError(f"a group of paired values of lengths {len(a)} and {len(b)}")
        groups.append(np.asarray(a, dtype=float) - np.asarray(b, dtype=float))
    mean = float(np.concatenate(groups).mean())
    rng = np.random.default_rng(seed)
    sums = np.zeros(resamples)
    counts = np.zeros(resamples)
    picks = rng.integers(len(groups), size=(resamples, len(groups)))
    for g, differences in enumerate(groups):
        draws = (picks == g).sum(axis=1)  # how often each resample drew group g
        for k in range(1, int(draws.max()) + 1):
            rows = np.flatnonzero(draws >= k)
            if rows.size:
                items = rng.integers(differences.size, size=(rows.size, differences.size))
                sums[rows] += differences[items].sum(axis=1)
                counts[rows] += differences.size
    means = sums / counts
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return PairedDifference(mean, (float(low), float(high)))


def chance_level(choices: int, correct_choices: Optional[int] = 1) -> float:
    if choices < 1 or not 1 <= (correct_choices or 1) <= choices:
        raise ValueError(f"chance level of {correct_choices} right among {choices} choices")
    return (correct_choices or 1) / choices

"""labkit/stats.py, the lab's one rule for "clearly different": Student's t for the degrees of freedom,
and a crossed design (training seeds x test samples) whose interval covers the truth as often as it
claims to, where treating its cells as independent repeats does not."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from labkit import stats


def test_t_quantile_fits_the_degrees_of_freedom():
    assert stats.t_quantile(2) == pytest.approx(4.303, abs=1e-3)  # three repeats
    assert stats.t_quantile(8) == pytest.approx(2.306, abs=1e-3)
    assert stats.t_quantile(10_000) == pytest.approx(1.960, abs=1e-3)


def test_independent_values_give_the_one_sample_t_test():
    values = np.array([0.3, -0.1, 0.8, 0.5, 0.2])
    estimate = stats.independent(values)
    assert estimate.mean == pytest.approx(values.mean())
    assert estimate.standard_error == pytest.approx(scipy_stats.sem(values))
    assert estimate.df == 4
    assert estimate.p_value == pytest.approx(scipy_stats.ttest_1samp(values, 0).pvalue)
    low, high = scipy_stats.t.interval(0.95, 4, loc=values.mean(), scale=scipy_stats.sem(values))
    assert estimate.margin == pytest.approx((high - low) / 2)


@pytest.mark.parametrize(
    ("values", "direction"),
    [([1.0, 1.1, 0.9, 1.05], 1), ([-1.0, -1.1, -0.9, -1.05], -1), ([1.0, -0.5, 0.8, -0.2], 0)],
    ids=["clearly above", "clearly below", "not clear"],
)
def test_the_direction_is_clear_only_when_the_interval_leaves_zero_out(values, direction):
    estimate = stats.independent(values)
    assert estimate.direction == direction
    assert (estimate.p_value < 0.05) == (direction != 0)


def test_no_spread_at_all():
    assert stats.independent([0, 0, 0]).direction == 0 and stats.independent([0, 0, 0]).p_value == 1
    assert stats.crossed(np.full((3, 3), 0.5)).direction == 1


def test_a_table_that_varies_by_row_only_is_its_row_means():
    """A seed effect and nothing else: the crossed estimate is that of the seeds' means, n - 1 df."""
    rows = np.array([0.2, 0.9, 0.4])
    crossed, of_rows = stats.crossed(np.repeat(rows[:, None], 3, axis=1)), stats.independent(rows)
    assert (crossed.mean, crossed.standard_error, crossed.df) == pytest.approx(
        (of_rows.mean, of_rows.standard_error, of_rows.df)
    )


def coverage(estimate, tables) -> float:
    """How often the 95% interval of the estimate covers the true mean, zero."""
    return np.mean([abs(e.mean) <= e.margin for e in map(estimate, tables)])


def test_a_crossed_design_covers_as_often_as_it_claims_and_nine_independent_values_do_not():
    """3 training seeds x 3 test samples, each lifting its row or column (as a lucky seed and a hard test
    sample do), plus noise: the crossed interval covers the true mean at least 93% of the time; the 9
    cells taken as independent repeats cover it far less often than the 95% they claim."""
    rng = np.random.default_rng(0)
    tables = [
        rng.normal(size=(3, 1)) + rng.normal(size=(1, 3)) + rng.normal(0, 0.3, (3, 3)) for _ in range(1000)
    ]
    assert coverage(stats.crossed, tables) >= 0.93
    assert coverage(stats.independent, tables) < 0.85

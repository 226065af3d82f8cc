"""When is a difference clear? The lab's one rule, for every comparison its notebooks make.

A difference measured on a few repeats is an estimate: its mean, and the standard error of that mean
(how far the mean itself would move if the whole experiment were run again). It is *clearly* different
from zero when its 95% confidence interval, mean ± t × standard error, leaves zero out. t is Student's
quantile for the estimate's degrees of freedom: 4.30 for 3 repeats (2 degrees of freedom), 2.31 for 9,
about 2 for hundreds. With a handful of repeats, "twice the standard error" is not enough.

What the standard error is depends on how the values were measured:
- `independent(values)`: values that vary independently of one another (the images of a test set, runs
  that each have a seed of their own): sd / sqrt(n), with n - 1 degrees of freedom.
- `crossed(table)`: a table whose rows and columns are two things that vary, crossed (training seeds x
  test samples: every seed meets every test sample). Its cells are not independent repeats: a lucky seed
  lifts its whole row, a hard test sample its whole column. The variance of the mean adds up three
  parts, each divided by how many times it was averaged: the variance between rows over the number of
  rows, between columns over the number of columns, and what is left over the number of cells (a
  two-way random-effects analysis of variance); Satterthwaite's approximation (1946) gives its degrees
  of freedom.
"""

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

LEVEL = 0.95  # of the confidence interval: a difference is clear at the 5% level, two-sided


def t_quantile(df: float, level: float = LEVEL) -> float:
    """Student's t quantile that a two-sided interval at `level` needs with `df` degrees of freedom."""
    return float(scipy_stats.t.ppf(0.5 + level / 2, df))


@dataclass(frozen=True)
class Estimate:
    """A mean with its standard error and degrees of freedom."""

    mean: float
    standard_error: float
    df: float

    @property
    def margin(self) -> float:
        """Half the width of the 95% confidence interval: t x standard error."""
        return t_quantile(self.df) * self.standard_error

    @property
    def p_value(self) -> float:
        """Two-sided: how often a mean this far from zero would come up if the true difference were zero."""
        if self.standard_error == 0:
            return 1.0 if self.mean == 0 else 0.0
        return float(2 * scipy_stats.t.sf(abs(self.mean) / self.standard_error, self.df))

    @property
    def direction(self) -> int:
        """-1 when the whole interval lies below zero, +1 when above, 0 when it holds zero: not clear."""
        if abs(self.mean) <= self.margin:
            return 0
        return 1 if self.mean > 0 else -1

    def __str__(self) -> str:
        return f"{self.mean:+.2f} ± {self.margin:.2f}"


def independent(values) -> Estimate:
    """The mean of values that vary independently of one another (at least two)."""
    values = np.asarray(values, dtype=float).ravel()
    if len(values) < 2:
        raise ValueError("a standard error needs at least two values")
    return Estimate(float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values))), len(values) - 1)


def crossed(table) -> Estimate:
    """The mean of a table whose rows and columns vary crossed (e.g. training seeds x test samples)."""
    values = np.asarray(table, dtype=float)
    rows, columns = values.shape
    if rows == 1 or columns == 1:  # only one of the two varies
        return independent(values)
    grand, row_means, column_means = values.mean(), values.mean(1), values.mean(0)
    residuals = values - row_means[:, None] - column_means[None, :] + grand
    mean_squares = np.array([  # between rows, between columns, left over
        columns * np.sum((row_means - grand) ** 2) / (rows - 1),
        rows * np.sum((column_means - grand) ** 2) / (columns - 1),
        np.sum(residuals**2) / ((rows - 1) * (columns - 1)),
    ])  # fmt: skip
    dfs = np.array([rows - 1, columns - 1, (rows - 1) * (columns - 1)])
    # Var(mean) = var_rows / rows + var_columns / columns + var_left / cells, each variance estimated from
    # the mean squares (a row's mean square holds the left-over variance too); none below zero.
    kept = mean_squares[:2] > mean_squares[2]
    weights = np.array([*kept, 1 - kept.sum()]) / values.size
    variance = float(weights @ mean_squares)
    if variance == 0:
        return Estimate(float(grand), 0.0, float(dfs[2]))
    df = variance**2 / np.sum((weights * mean_squares) ** 2 / dfs)  # Satterthwaite
    return Estimate(float(grand), math.sqrt(variance), float(df))

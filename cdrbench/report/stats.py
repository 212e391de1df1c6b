"""Aggregation over seeds, paired significance tests and the papers' improvement formulas
(``shared/design/evaluation.md`` §5, BiGNAS paper §"Evaluation")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import stats as scipy_stats

from cdrbench.eval.ctr import rela_impr_auc, rela_impr_logloss

#: metrics where lower is better; every other metric is maximised
LOWER_IS_BETTER = ("logloss",)


def lower_is_better(metric: str) -> bool:
    return metric.split("@")[0] in LOWER_IS_BETTER


@dataclass(frozen=True)
class PairedTest:
    """Paired t-test of A against B; ``d = A - B`` (sign flipped where lower is better)."""

    n: int
    mean_diff: float
    t: float
    p: float

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p < alpha and self.mean_diff > 0


def paired_test(a: Sequence[float], b: Sequence[float], metric: str, alternative: str = "two-sided") -> Optional[PairedTest]:
    """``scipy.stats.ttest_rel`` on matched pairs (seeds or users); ``None`` with fewer than 2
    pairs. ``alternative='greater'`` tests A better than B (after the sign flip)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) != len(b):
        raise ValueError(f"paired test needs matched samples, got {len(a)} and {len(b)}")
    if len(a) < 2:
        return None
    sign = -1.0 if lower_is_better(metric) else 1.0
    d = sign * (a - b)
    if np.all(d == d[0]):  # zero variance: t is infinite or undefined
        return PairedTest(len(d), float(d.mean()), float("inf") if d[0] else float("nan"), 0.0 if d[0] else 1.0)
    result = scipy_stats.ttest_rel(sign * a, sign * b, alternative=alternative)
    return PairedTest(len(d), float(d.mean()), float(result.statistic), float(result.pvalue))


def improvement(ours: float, base: float, metric: str) -> float:
    """The papers' relative improvement of ``ours`` over ``base``, in percent:
    RelaImpr (BiGNAS) for AUC, ``((AUC - 0.5)/(AUC_b - 0.5) - 1)``, and LogLoss,
    ``(LL_b / LL - 1)``; the plain ratio ``ours / base - 1`` (HAGO, PCRec "Impro.") otherwise."""
    name = metric.split("@")[0]
    if name == "auc":
        return rela_impr_auc(ours, base)
    if name == "logloss":
        return rela_impr_logloss(ours, base)
    return (ours / base - 1.0) * 100.0


def best_index(values: dict, metric: str) -> list:
    """Keys of ``values`` ordered best first (NaN last)."""
    finite = {k: v for k, v in values.items() if v is not None and v == v}
    ordered = sorted(finite, key=lambda k: finite[k], reverse=not lower_is_better(metric))
    return ordered + [k for k in values if k not in finite]

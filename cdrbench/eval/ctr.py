"""CTR metrics (evaluation spec section 1): AUC, LogLoss, GAUC and RelaImpr.

Pure functions: arrays (lists, numpy arrays or torch tensors) in, numbers out.
They never read the config.

An undefined metric (AUC of a split with a single class, GAUC when no user has
both classes) raises :class:`UndefinedMetricError`; no fallback value is ever
returned. :func:`ctr_metrics` is the only place that catches it, and it stores
``None`` plus a reason string, never a number.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

__all__ = [
    "UndefinedMetricError",
    "auc",
    "logloss",
    "gauc",
    "rela_impr_auc",
    "rela_impr_logloss",
    "ctr_metrics",
]


class UndefinedMetricError(ValueError):
    """A metric is mathematically undefined for the given input (e.g. AUC with one class)."""


# --------------------------------------------------------------------------- validation


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, on any device
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def _check_labels(y: Any) -> np.ndarray:
    arr = _to_numpy(y, "y")
    if arr.dtype == np.bool_:
        return arr.astype(np.int64)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"y must be numeric 0/1 labels, got dtype {arr.dtype}")
    bad = ~((arr == 0) | (arr == 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"y must contain only 0/1 labels; found {int(bad.sum())} other value(s), "
            f"first {arr[i]!r} at row {i}"
        )
    return arr.astype(np.int64)


def _check_probs(p: Any) -> np.ndarray:
    arr = _to_numpy(p, "p")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
            or arr.dtype == np.bool_):
        raise ValueError(f"p must be numeric probabilities, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr) | (arr < 0.0) | (arr > 1.0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"p must be finite probabilities in [0, 1]; found {int(bad.sum())} invalid "
            f"value(s), first {arr[i]!r} at row {i}"
        )
    return arr


def _check_yp(y: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    ya = _check_labels(y)
    pa = _check_probs(p)
    if ya.shape[0] != pa.shape[0]:
        raise ValueError(f"length mismatch: y has {ya.shape[0]} rows, p has {pa.shape[0]}")
    if ya.shape[0] == 0:
        raise ValueError("y and p are empty: a metric needs at least one row")
    return ya, pa


def _single_class_message(y: np.ndarray, what: str = "AUC") -> str:
    n = int(y.shape[0])
    n_pos = int(y.sum())
    missing = "negative (y=0)" if n_pos == n else "positive (y=1)"
    return (
        f"{what} is undefined: no {missing} row among {n} rows "
        f"({n_pos} positive, {n - n_pos} negative)"
    )


# --------------------------------------------------------------------------- metrics


def auc(y: Any, p: Any) -> float:
    """ROC AUC (ties count 1/2), via scikit-learn's ``roc_auc_score``.

    Raises :class:`UndefinedMetricError` if only one class is present.
    """
    ya, pa = _check_yp(y, p)
    n_pos = int(ya.sum())
    if n_pos == 0 or n_pos == ya.shape[0]:
        raise UndefinedMetricError(_single_class_message(ya))
    return float(roc_auc_score(ya, pa))


def logloss(y: Any, p: Any, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy in float64 with ``p`` clipped to ``[eps, 1 - eps]``."""
    if not (0.0 < eps < 0.5):
        raise ValueError(f"eps must be in (0, 0.5), got {eps!r}")
    ya, pa = _check_yp(y, p)
    pc = np.clip(pa, eps, 1.0 - eps)
    ll = np.where(ya == 1, np.log(pc), np.log(1.0 - pc))
    return float(-np.mean(ll))


def _per_user_auc(users: Any, y: np.ndarray, p: np.ndarray):
    """Vectorised per-user Mann-Whitney AUC (tied scores share their average rank).

    Returns (n_rows[G], n_pos[G], auc[G] with NaN where undefined).
    """
    u = _to_numpy(users, "users")
    if u.shape[0] != y.shape[0]:
        raise ValueError(f"length mismatch: users has {u.shape[0]} rows, y has {y.shape[0]}")
    _, uid = np.unique(u, return_inverse=True)
    uid = uid.reshape(-1)
    order = np.lexsort((p, uid))  # by user, then score ascending
    us, ps, ys = uid[order], p[order], y[order]
    n = us.shape[0]
    # tie groups: runs of equal (user, score)
    new_grp = np.ones(n, dtype=bool)
    new_grp[1:] = (us[1:] != us[:-1]) | (ps[1:] != ps[:-1])
    grp = np.cumsum(new_grp) - 1
    grp_start = np.flatnonzero(new_grp)
    grp_end = np.append(grp_start[1:], n) - 1  # inclusive
    new_user = np.ones(n, dtype=bool)
    new_user[1:] = us[1:] != us[:-1]
    user_start = np.flatnonzero(new_user)  # users are 0..G-1 in this order
    # 1-based average rank inside the user's block
    rank = (grp_start[grp] + grp_end[grp]) / 2.0 - user_start[us] + 1.0
    n_users = user_start.shape[0]
    n_rows = np.bincount(us, minlength=n_users).astype(np.float64)
    n_pos = np.bincount(us, weights=ys.astype(np.float64), minlength=n_users)
    rank_pos = np.bincount(us, weights=rank * ys, minlength=n_users)
    n_neg = n_rows - n_pos
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (rank_pos - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
    a[(n_pos == 0) | (n_neg == 0)] = np.nan
    return n_rows, n_pos, a


def gauc(users: Any, y: Any, p: Any) -> tuple[float, float]:
    """Row-weighted mean of per-user AUC over users with both classes.

    Returns ``(gauc, coverage)`` where coverage is the share of rows belonging to
    the users that were counted. Raises :class:`UndefinedMetricError` if no user
    has both classes (e.g. leave-one-out CTR splits).
    """
    ya, pa = _check_yp(y, p)
    n_rows, _, a = _per_user_auc(users, ya, pa)
    ok = ~np.isnan(a)
    if not ok.any():
        raise UndefinedMetricError(
            f"GAUC is undefined: none of the {n_rows.shape[0]} users has both a positive "
            f"and a negative row ({ya.shape[0]} rows)"
        )
    w = n_rows[ok]
    value = float(np.sum(w * a[ok]) / np.sum(w))
    coverage = float(np.sum(w) / ya.shape[0])
    return value, coverage


def _check_finite(name: str, x: float) -> float:
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x!r}")
    return x


def rela_impr_auc(auc_model: float, auc_base: float) -> float:
    """BiGNAS RelaImpr on AUC in percent: ((AUC_m - 0.5) / (AUC_b - 0.5) - 1) * 100."""
    m = _check_finite("auc_model", auc_model)
    b = _check_finite("auc_base", auc_base)
    if b == 0.5:
        raise UndefinedMetricError("RelaImpr(AUC) is undefined: the baseline AUC is exactly 0.5")
    return ((m - 0.5) / (b - 0.5) - 1.0) * 100.0


def rela_impr_logloss(ll_model: float, ll_base: float) -> float:
    """BiGNAS RelaImpr on LogLoss in percent: (LogLoss_b / LogLoss_m - 1) * 100."""
    m = _check_finite("ll_model", ll_model)
    b = _check_finite("ll_base", ll_base)
    if m == 0.0:
        raise UndefinedMetricError("RelaImpr(LogLoss) is undefined: the model LogLoss is 0")
    return (b / m - 1.0) * 100.0


def ctr_metrics(y: Any, p: Any, users: Any = None, with_gauc: bool = False) -> dict:
    """All CTR metrics of one split.

    Returns ``{"auc": float | None, "logloss": float, "n_rows": int, "n_pos": int}``.
    An undefined AUC is stored as ``None`` with ``"auc_undefined_reason"``; the
    evaluator prints "undefined". With ``with_gauc=True`` (``users`` required) the
    dict also holds ``"gauc"``, ``"gauc_coverage"`` (``None`` plus
    ``"gauc_undefined_reason"`` when undefined).
    """
    ya, pa = _check_yp(y, p)
    out: dict = {
        "auc": None,
        "logloss": logloss(ya, pa),
        "n_rows": int(ya.shape[0]),
        "n_pos": int(ya.sum()),
    }
    try:
        out["auc"] = auc(ya, pa)
    except UndefinedMetricError as e:
        out["auc"] = None
        out["auc_undefined_reason"] = str(e)
    if with_gauc:
        if users is None:
            raise ValueError("with_gauc=True needs the user id of every row (users=None given)")
        try:
            out["gauc"], out["gauc_coverage"] = gauc(users, ya, pa)
        except UndefinedMetricError as e:
            out["gauc"] = None
            out["gauc_coverage"] = None
            out["gauc_undefined_reason"] = str(e)
    return out

"""CTR metrics: worked examples E1-E3 of the evaluation spec (section 6)."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from cdrbench.eval.ctr import (
    UndefinedMetricError,
    auc,
    ctr_metrics,
    gauc,
    logloss,
    rela_impr_auc,
    rela_impr_logloss,
)

E1_Y = [1, 1, 0, 1, 0, 0]
E1_P = [0.9, 0.8, 0.7, 0.6, 0.6, 0.1]


# ----------------------------------------------------------------------------- E1


def test_e1_auc_counts_tie_as_half():
    # positives 0.9, 0.8 beat all 3 negatives (3 + 3); 0.6 loses to 0.7, ties 0.6,
    # beats 0.1 (0 + 1/2 + 1) -> 7.5 / 9
    assert auc(E1_Y, E1_P) == pytest.approx(7.5 / 9, abs=1e-12)
    assert auc(E1_Y, E1_P) == pytest.approx(0.8333, abs=1e-4)


def test_e1_logloss():
    expected = -(math.log(.9) + math.log(.8) + math.log(.3) + math.log(.6)
                 + math.log(.4) + math.log(.9)) / 6
    assert logloss(E1_Y, E1_P) == pytest.approx(0.5108, abs=1e-4)
    assert logloss(E1_Y, E1_P) == pytest.approx(expected, rel=1e-12)


def test_logloss_clips_to_eps():
    # p = 1 for a negative row would be +inf without clipping: -ln(1e-7) / 2 rows
    val = logloss([0, 1], [1.0, 1.0])
    assert val == pytest.approx(-math.log(1e-7) / 2, rel=1e-6)
    assert math.isfinite(val)
    val0 = logloss([1], [0.0])
    assert val0 == pytest.approx(-math.log(1e-7), rel=1e-9)
    # custom eps
    assert logloss([1], [0.0], eps=1e-3) == pytest.approx(-math.log(1e-3), rel=1e-9)


def test_logloss_float64_from_float32_input():
    y = np.array([1, 0, 1], dtype=np.int64)
    p32 = np.array([0.3, 0.2, 0.7], dtype=np.float32)
    expected = -np.mean([np.log(np.float64(p32[0])), np.log(1 - np.float64(p32[1])),
                         np.log(np.float64(p32[2]))])
    assert logloss(y, p32) == pytest.approx(float(expected), rel=1e-15)


@pytest.mark.parametrize("y", [[1, 1, 1], [0, 0, 0, 0]])
def test_e1_single_class_auc_raises(y):
    p = [0.2, 0.5, 0.9, 0.4][: len(y)]
    with pytest.raises(UndefinedMetricError) as exc:
        auc(y, p)
    msg = str(exc.value)
    assert ("negative" if y[0] == 1 else "positive") in msg
    assert f"{len(y)} rows" in msg
    assert isinstance(exc.value, ValueError)


def test_e1_ctr_metrics_defined():
    out = ctr_metrics(E1_Y, E1_P)
    assert out["auc"] == pytest.approx(0.8333, abs=1e-4)
    assert out["logloss"] == pytest.approx(0.5108, abs=1e-4)
    assert "auc_undefined_reason" not in out
    assert out["n_rows"] == 6 and out["n_pos"] == 3


def test_e1_ctr_metrics_single_class_stores_none_not_a_number():
    out = ctr_metrics([1, 1, 1], [0.9, 0.4, 0.6])
    assert out["auc"] is None  # not 1.0, not 0.5, not NaN
    assert "undefined" in out["auc_undefined_reason"]
    assert "negative" in out["auc_undefined_reason"]
    assert out["logloss"] == pytest.approx(-(math.log(.9) + math.log(.4) + math.log(.6)) / 3)


def test_auc_matches_sklearn_random_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = rng.integers(0, 20, 500) / 20.0  # many ties
    assert auc(y, p) == roc_auc_score(y, p)


def test_accepts_torch_tensors_and_bool_labels():
    y = torch.tensor(E1_Y, dtype=torch.bool)
    p = torch.tensor(E1_P, dtype=torch.float64)
    assert auc(y, p) == pytest.approx(7.5 / 9)
    assert logloss(y, p) == pytest.approx(0.5108, abs=1e-4)


# ----------------------------------------------------------------------------- E2


E2_USERS = ["A"] * 3 + ["B"] * 4 + ["C"] * 2
E2_Y = [1, 0, 1] + [1, 0, 0, 0] + [1, 1]
E2_P = [0.9, 0.4, 0.3] + [0.2, 0.5, 0.1, 0.05] + [0.7, 0.2]


def test_e2_gauc():
    # A: AUC 0.5 (3 rows); B: AUC 2/3 (4 rows); C: one class, excluded
    value, coverage = gauc(E2_USERS, E2_Y, E2_P)
    assert value == pytest.approx((3 * 0.5 + 4 * 2 / 3) / 7, abs=1e-12)
    assert value == pytest.approx(0.5952, abs=1e-4)
    assert coverage == pytest.approx(7 / 9, abs=1e-12)


def test_e2_gauc_row_order_and_id_type_do_not_matter():
    rng = np.random.default_rng(1)
    perm = rng.permutation(9)
    codes = {"A": 10, "B": 3, "C": 7}
    u = np.array([codes[x] for x in E2_USERS])[perm]
    value, coverage = gauc(u, np.array(E2_Y)[perm], np.array(E2_P)[perm])
    assert value == pytest.approx(0.5952, abs=1e-4)
    assert coverage == pytest.approx(7 / 9)


def test_gauc_matches_per_user_sklearn_with_ties():
    rng = np.random.default_rng(2)
    n = 2000
    users = rng.integers(0, 60, n)
    y = rng.integers(0, 2, n)
    p = rng.integers(0, 8, n) / 8.0
    expected_num = expected_den = 0.0
    for u in np.unique(users):
        m = users == u
        if len(np.unique(y[m])) == 2:
            expected_num += m.sum() * roc_auc_score(y[m], p[m])
            expected_den += m.sum()
    value, coverage = gauc(users, y, p)
    assert value == pytest.approx(expected_num / expected_den, abs=1e-12)
    assert coverage == pytest.approx(expected_den / n)


def test_gauc_leave_one_out_is_undefined():
    with pytest.raises(UndefinedMetricError, match="GAUC is undefined"):
        gauc([0, 1, 2], [1, 0, 1], [0.3, 0.4, 0.5])
    out = ctr_metrics([1, 0, 1], [0.3, 0.4, 0.5], users=[0, 1, 2], with_gauc=True)
    assert out["gauc"] is None and out["gauc_coverage"] is None
    assert "GAUC is undefined" in out["gauc_undefined_reason"]
    assert out["auc"] == pytest.approx(0.5)


def test_ctr_metrics_with_gauc():
    out = ctr_metrics(E2_Y, E2_P, users=E2_USERS, with_gauc=True)
    assert out["gauc"] == pytest.approx(0.5952, abs=1e-4)
    assert out["gauc_coverage"] == pytest.approx(7 / 9)
    with pytest.raises(ValueError, match="users"):
        ctr_metrics(E2_Y, E2_P, with_gauc=True)


# ----------------------------------------------------------------------------- E3


def test_e3_rela_impr():
    # BiGNAS vs EDDA on Bo-Mo
    assert rela_impr_auc(0.7795, 0.7731) == pytest.approx(2.34, abs=5e-3)
    assert rela_impr_auc(0.7795, 0.7731) == pytest.approx((0.2795 / 0.2731 - 1) * 100)
    assert rela_impr_logloss(0.4520, 0.4554) == pytest.approx(0.75, abs=5e-3)
    assert rela_impr_logloss(0.4520, 0.4554) == pytest.approx((0.4554 / 0.4520 - 1) * 100)
    # a worse model gives a negative improvement
    assert rela_impr_auc(0.7731, 0.7795) < 0
    assert rela_impr_logloss(0.4554, 0.4520) < 0


def test_rela_impr_undefined():
    with pytest.raises(UndefinedMetricError):
        rela_impr_auc(0.7, 0.5)
    with pytest.raises(UndefinedMetricError):
        rela_impr_logloss(0.0, 0.4)
    with pytest.raises(ValueError, match="finite"):
        rela_impr_auc(float("nan"), 0.7)


# ----------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "y, p, match",
    [
        ([1, 0], [0.5], "length mismatch"),
        ([1, 2, 0], [0.5, 0.4, 0.3], "0/1"),
        ([1, 0, 0], [0.5, float("nan"), 0.3], r"finite probabilities in \[0, 1\]"),
        ([1, 0, 0], [0.5, 1.2, 0.3], r"finite probabilities in \[0, 1\]"),
        ([1, 0, 0], [0.5, -0.1, 0.3], r"finite probabilities in \[0, 1\]"),
        ([1, 0], [0.5, float("inf")], "finite"),
        ([], [], "empty"),
        ([[1, 0]], [[0.2, 0.3]], "1-D"),
    ],
)
def test_bad_inputs_raise_value_error(y, p, match):
    for fn in (auc, logloss, ctr_metrics):
        with pytest.raises(ValueError, match=match) as exc:
            fn(y, p)
        assert not isinstance(exc.value, UndefinedMetricError)


def test_gauc_user_length_mismatch():
    with pytest.raises(ValueError, match="length mismatch"):
        gauc([0, 1], [1, 0, 1], [0.1, 0.2, 0.3])

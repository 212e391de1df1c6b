"""Shared objectives against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cdrbench.models.losses import bpr_loss, embedding_l2, info_nce, info_nce_logits


def test_bpr_loss_is_mean_negative_log_sigmoid():
    pos, neg = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.5])
    expected = (-math.log(1 / (1 + math.exp(-1.0))) - math.log(1 / (1 + math.exp(0.5)))) / 2
    assert bpr_loss(pos, neg).item() == pytest.approx(expected, rel=1e-6)


def test_embedding_l2_forms():
    a = torch.tensor([[3.0, 4.0], [0.0, 0.0]])  # ||a||_F = 5
    b = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # ||b||_F = 1
    assert embedding_l2(a, b, form="squared_half").item() == pytest.approx((25 + 1) / (2 * 2))
    assert embedding_l2(a, b, form="frobenius").item() == pytest.approx((5 + 1) / 2)
    with pytest.raises(ValueError, match="form"):
        embedding_l2(a, form="l1")


def test_info_nce_matches_a_hand_computation_on_three_rows():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    tau = 0.5

    def cos(x, y):
        return float(x @ y / (x.norm() * y.norm()))

    for intra in (True, False):
        total = 0.0
        for i in range(3):
            denom = sum(math.exp(cos(a[i], b[j]) / tau) for j in range(3))
            if intra:
                denom += sum(math.exp(cos(a[i], a[j]) / tau) for j in range(3) if j != i)
            total += -math.log(math.exp(cos(a[i], b[i]) / tau) / denom)
        assert info_nce(a, b, tau, intra_view_negatives=intra).item() == pytest.approx(total / 3, rel=1e-5)


def test_info_nce_logits_is_cross_entropy_with_the_positive_first():
    pos = torch.tensor([0.9, 0.1])
    neg = torch.tensor([[0.2, -0.3], [0.5, 0.4]])
    tau = 0.07
    expected = [-(p / tau) + math.log(math.exp(p / tau) + sum(math.exp(n / tau) for n in row))
                for p, row in zip(pos.tolist(), neg.tolist())]
    assert info_nce_logits(pos, neg, tau).item() == pytest.approx(sum(expected) / 2, rel=1e-5)
    assert info_nce_logits(pos, neg, tau).item() == pytest.approx(
        F.cross_entropy(torch.cat([pos[:, None], neg], 1) / tau, torch.zeros(2, dtype=torch.long)).item())

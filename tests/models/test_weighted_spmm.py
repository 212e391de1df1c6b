"""``CSRPattern`` / ``weighted_spmm`` / ``gcn_norm_values``: a fixed sparsity pattern whose entry
values are learnable, against dense references and numerical gradients."""

from __future__ import annotations

import pytest
import torch

from cdrbench.models.sparse import CSRPattern, gcn_norm_values, weighted_spmm

SRC = torch.tensor([0, 1, 2, 3, 4, 5, 1, 0, 6, 3])
DST = torch.tensor([1, 0, 3, 2, 5, 4, 2, 6, 0, 5])


def test_pattern_and_its_transpose_match_the_dense_matrix():
    pattern, position = CSRPattern.from_edges(SRC, DST, 7)
    w = torch.arange(1.0, 11.0)
    values = torch.zeros(pattern.nnz).scatter(0, position, w)
    dense = torch.zeros(7, 7)
    dense[DST, SRC] = w
    assert torch.equal(pattern.matrix(values).to_dense(), dense)
    assert torch.equal(pattern.T.matrix(values[pattern.transpose_perm]).to_dense(), dense.T)
    assert pattern.T.T is pattern
    with pytest.raises(ValueError, match="repeated edges"):
        CSRPattern.from_edges(torch.tensor([0, 0]), torch.tensor([1, 1]), 2)


def test_weighted_spmm_is_differentiable_in_values_and_features_twice():
    pattern, position = CSRPattern.from_edges(SRC, DST, 7)
    w = torch.rand(10, dtype=torch.float64, requires_grad=True)
    x = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)

    def f(w, x):
        return weighted_spmm(pattern, torch.zeros(pattern.nnz, dtype=torch.float64).scatter(0, position, w), x)

    assert torch.autograd.gradcheck(f, (w, x)) and torch.autograd.gradgradcheck(f, (w, x))


def test_gcn_norm_values_equal_the_dense_normalisation_with_finite_gradients_at_degree_zero():
    pattern, position = CSRPattern.from_edges(SRC, DST, 8)  # node 7 is isolated
    w = torch.rand(10, dtype=torch.float64)
    weight = torch.zeros(pattern.nnz, dtype=torch.float64).scatter(0, position, w).requires_grad_(True)
    dense = torch.zeros(8, 8, dtype=torch.float64)
    dense[DST, SRC] = w
    for loops in (False, True):
        values, loop = gcn_norm_values(pattern, weight, add_self_loops=loops)
        deg = dense.sum(1) + (1.0 if loops else 0.0)
        inv = torch.where(deg > 0, deg.clamp(min=1e-300).pow(-0.5), torch.zeros_like(deg))
        torch.testing.assert_close(pattern.matrix(values.detach()).to_dense(), inv[:, None] * dense * inv[None, :])
        if loops:
            torch.testing.assert_close(loop, 1.0 / deg)
    values, _ = gcn_norm_values(pattern, weight)
    values.sum().backward()
    assert torch.isfinite(weight.grad).all()

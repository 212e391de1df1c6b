"""Sparse-dense matrix products with a cheap, twice-differentiable backward."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


class _SparseMatmul(torch.autograd.Function):
    """``adj @ x`` whose backward is ``adj_t @ grad`` with a precomputed ``adj_t``.

    torch's own CSR backward rebuilds the transpose on every call (about 6x slower on CPU for a
    LightGCN layer); the backward here calls this function again, so it supports double backward
    (the Hessian-vector products of BiGNAS's outer step).
    """

    @staticmethod
    def forward(ctx, adj: Tensor, adj_t: Tensor, x: Tensor) -> Tensor:
        ctx.adj, ctx.adj_t = adj, adj_t
        return adj @ x

    @staticmethod
    def backward(ctx, grad: Tensor):
        return None, None, _SparseMatmul.apply(ctx.adj_t, ctx.adj, grad)


def spmm(adj: Tensor, x: Tensor, adj_t: Optional[Tensor] = None) -> Tensor:
    """``adj @ x`` for a sparse ``adj`` that does not require grad.

    ``adj_t`` is ``adj``'s transpose; ``None`` means ``adj`` is symmetric (every normalised
    adjacency of cdrbench's undirected graphs is)."""
    if adj.requires_grad:
        return adj @ x
    return _SparseMatmul.apply(adj, adj if adj_t is None else adj_t, x)

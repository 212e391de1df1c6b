"""Sparse-dense matrix products with a cheap, twice-differentiable backward."""

from __future__ import annotations

import warnings
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


# ---------------------------------------------------------------------------- learnable edge weights
class CSRPattern:
    r"""The fixed sparsity pattern of a square ``[N, N]`` matrix in CSR order, for graphs whose edge
    *weights* change every step while the edges stay (HAGO's coordinator weights, augmentation
    masks): the index is sorted once, and each step only supplies a new ``values`` vector.

    Entry ``e`` is the message ``col[e] -> row[e]`` (row = receiving node), the convention of
    :func:`cdrbench.data.graph.normalized_adjacency`. :attr:`transpose_perm` maps the entries
    to the CSR order of the transpose, so ``A^T`` costs an index gather instead of a sort.
    """

    def __init__(self, crow: Tensor, col: Tensor, row: Tensor, num_nodes: int, transpose_perm: Tensor,
                 t_crow: Tensor, t_col: Tensor):
        self.crow, self.col, self.row = crow, col, row
        self.num_nodes = num_nodes
        self.transpose_perm = transpose_perm
        self._t_crow, self._t_col = t_crow, t_col
        self._transposed: Optional["CSRPattern"] = None

    @classmethod
    def from_edges(cls, src: Tensor, dst: Tensor, num_nodes: int) -> tuple["CSRPattern", Tensor]:
        """Pattern of the edges ``src -> dst`` and, for every input edge, its entry index.

        Edges must be unique (a repeated edge would need two values for one entry)."""
        src, dst = src.long().cpu(), dst.long().cpu()
        key = dst * num_nodes + src
        order = torch.argsort(key)
        sorted_key = key[order]
        if sorted_key.numel() > 1 and bool((sorted_key[1:] == sorted_key[:-1]).any()):
            raise ValueError("CSRPattern.from_edges: repeated edges (deduplicate them first)")
        position = torch.empty_like(order)
        position[order] = torch.arange(order.numel())
        row, col = dst[order], src[order]
        crow = torch.zeros(num_nodes + 1, dtype=torch.long)
        crow[1:] = torch.cumsum(torch.bincount(row, minlength=num_nodes), 0)
        t_order = torch.argsort(col * num_nodes + row)  # the transpose's CSR order, in entry indices
        t_crow = torch.zeros(num_nodes + 1, dtype=torch.long)
        t_crow[1:] = torch.cumsum(torch.bincount(col, minlength=num_nodes), 0)
        return cls(crow, col, row, num_nodes, t_order, t_crow, row[t_order]), position

    @property
    def nnz(self) -> int:
        return int(self.col.numel())

    @property
    def T(self) -> "CSRPattern":
        """The transpose's pattern (its own ``transpose_perm`` leads back)."""
        if self._transposed is None:
            inverse = torch.empty_like(self.transpose_perm)
            inverse[self.transpose_perm] = torch.arange(self.transpose_perm.numel(), device=inverse.device)
            self._transposed = CSRPattern(self._t_crow, self._t_col, self.col[self.transpose_perm], self.num_nodes,
                                          inverse, self.crow, self.col)
            self._transposed._transposed = self
        return self._transposed

    def to(self, device) -> "CSRPattern":
        return CSRPattern(self.crow.to(device), self.col.to(device), self.row.to(device), self.num_nodes,
                          self.transpose_perm.to(device), self._t_crow.to(device), self._t_col.to(device))

    def matrix(self, values: Tensor) -> Tensor:
        """The ``torch.sparse_csr_tensor`` with these entry values (no autograd through it)."""
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(self.crow, self.col, values, (self.num_nodes, self.num_nodes),
                                           check_invariants=False)


class _WeightedSpmm(torch.autograd.Function):
    """``A(values) @ x``, differentiable in ``values`` and ``x``: the backward is ``A^T @ grad``
    (through this function again, so it is twice differentiable) and, for the values, the
    sampled product ``grad_values[e] = <grad[row_e], x[col_e]>``."""

    @staticmethod
    def forward(ctx, values: Tensor, x: Tensor, pattern: CSRPattern) -> Tensor:
        ctx.pattern = pattern
        ctx.save_for_backward(values, x)
        return pattern.matrix(values.detach()) @ x

    @staticmethod
    def backward(ctx, grad: Tensor):
        values, x = ctx.saved_tensors
        pattern = ctx.pattern
        grad_values = grad_x = None
        if ctx.needs_input_grad[1]:
            grad_x = _WeightedSpmm.apply(values[pattern.transpose_perm], grad, pattern.T)
        if ctx.needs_input_grad[0]:
            # the sampled product on the pattern itself (no [nnz, d] gather; differentiable)
            grad_values = torch.sparse.sampled_addmm(pattern.matrix(torch.zeros_like(values)), grad, x.T, beta=0.0).values()
        return grad_values, grad_x, None


def weighted_spmm(pattern: CSRPattern, values: Tensor, x: Tensor) -> Tensor:
    """``A @ x`` for the matrix with ``pattern`` and entry ``values``; gradients reach both."""
    return _WeightedSpmm.apply(values, x, pattern)


def gcn_norm_values(pattern: CSRPattern, weight: Tensor, add_self_loops: bool = False) -> tuple[Tensor, Optional[Tensor]]:
    r"""Entry values of :math:`D^{-1/2} A D^{-1/2}` for edge weights ``weight`` (PyG's ``gcn_norm``):
    an edge ``j -> i`` of weight :math:`w` gets :math:`w / \sqrt{d_i d_j}` with :math:`d` the
    weighted in-degree; a node of degree 0 gets 0 (a weight-0 edge carries no message and adds
    nothing to a degree, exactly as a removed edge). With ``add_self_loops`` every node also has
    a loop of weight 1 (:math:`\tilde A = A + I`); its coefficient :math:`1/\tilde d_i` is returned
    as the second value (else ``None``). Differentiable in ``weight``."""
    deg = torch.zeros(pattern.num_nodes, dtype=weight.dtype, device=weight.device).index_add(0, pattern.row, weight)
    if add_self_loops:
        deg = deg + 1.0
    positive = deg > 0
    # pow on a masked copy: a 0-degree node must give a 0 coefficient *and* a finite gradient
    inv_sqrt = torch.where(positive, torch.where(positive, deg, torch.ones_like(deg)).pow(-0.5), torch.zeros_like(deg))
    values = inv_sqrt[pattern.row] * weight * inv_sqrt[pattern.col]
    return values, (inv_sqrt * inv_sqrt if add_self_loops else None)

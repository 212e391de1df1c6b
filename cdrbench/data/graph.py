"""Graph builders: interaction lists -> PyG ``edge_index`` and normalised ``torch.sparse`` CSR.

Node layout of a bipartite graph: users ``[0, U)``, then items ``[U, U + I)``, i.e. the node of
item ``i`` is ``U + i``. A unified multi-domain graph stacks the item blocks of several domains
after the shared user block (see :meth:`cdrbench.data.dataset.CrossDomainData.unified_graph`).

Callers pass training interactions only; :class:`~cdrbench.data.dataset.CrossDomainData` never
hands out anything else for graph building.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor


def bipartite_edge_index(users: Tensor, items: Tensor, num_users: int, item_offset: int = 0) -> Tensor:
    """Both directions of every (user, item) pair: ``[2, 2E]``, user->item edges first.

    Item nodes are ``num_users + item_offset + item``. Duplicated pairs stay duplicated
    (a repeated interaction is a parallel edge, as in the reference implementations).
    """
    users = users.long()
    item_nodes = items.long() + num_users + item_offset
    return torch.stack([torch.cat([users, item_nodes]), torch.cat([item_nodes, users])])


def normalized_adjacency(
    edge_index: Tensor,
    num_nodes: int,
    add_self_loops: bool = False,
    edge_weight: Optional[Tensor] = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    r"""Symmetrically normalised adjacency :math:`\hat A = D^{-1/2}(A + [I])D^{-1/2}` as sparse CSR.

    Row ``i`` holds the weights of the messages node ``i`` *receives*: entry ``(i, j)`` is the
    weight of edge ``j -> i`` (``edge_index[0] = j``, ``edge_index[1] = i``), so ``A_hat @ x`` is
    the aggregation of PyG's ``gcn_norm`` + ``propagate`` (flow ``source_to_target``). Degrees
    are in-degrees (weighted), as in ``gcn_norm``; parallel edges add up. With
    ``add_self_loops`` each node gets one loop of weight 1 (existing loops are replaced, as
    ``gcn_norm`` does). Isolated nodes get an all-zero row.
    """
    src, dst = edge_index[0].long(), edge_index[1].long()
    weight = torch.ones(src.numel(), dtype=dtype) if edge_weight is None else edge_weight.to(dtype)
    if add_self_loops:
        keep = src != dst
        loops = torch.arange(num_nodes)
        src = torch.cat([src[keep], loops])
        dst = torch.cat([dst[keep], loops])
        weight = torch.cat([weight[keep], torch.ones(num_nodes, dtype=dtype)])
    deg = torch.zeros(num_nodes, dtype=dtype).index_add_(0, dst, weight)
    inv_sqrt = deg.pow(-0.5)
    inv_sqrt[torch.isinf(inv_sqrt)] = 0.0
    values = inv_sqrt[src] * weight * inv_sqrt[dst]
    coo = torch.sparse_coo_tensor(
        torch.stack([dst, src]), values, (num_nodes, num_nodes), check_invariants=False
    )
    with warnings.catch_warnings():  # "sparse CSR support is in beta": known, not actionable
        warnings.simplefilter("ignore", UserWarning)
        return coo.coalesce().to_sparse_csr()


def mean_adjacency(edge_index: Tensor, num_nodes: int, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    r"""Row-normalised adjacency :math:`D_{in}^{-1} A` (mean over received messages, as PyG's
    ``aggr="mean"``; parallel edges count with their multiplicity) and its transpose, both CSR."""
    src, dst = edge_index[0].long(), edge_index[1].long()
    deg = torch.zeros(num_nodes, dtype=dtype).index_add_(0, dst, torch.ones(src.numel(), dtype=dtype))
    values = 1.0 / deg[dst]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        forward = torch.sparse_coo_tensor(torch.stack([dst, src]), values, (num_nodes, num_nodes), check_invariants=False)
        backward = torch.sparse_coo_tensor(torch.stack([src, dst]), values, (num_nodes, num_nodes), check_invariants=False)
        return forward.coalesce().to_sparse_csr(), backward.coalesce().to_sparse_csr()


@dataclass
class Graph:
    """One graph in the forms the models need, all built from the same training edges.

    ``edge_index`` feeds PyG message-passing layers (GAT, SAGE, ...); ``adj`` (no self-loops,
    LightGCN's :math:`D^{-1/2} A D^{-1/2}`) and ``adj_self_loops`` (GCN's
    :math:`\\tilde D^{-1/2}(A+I)\\tilde D^{-1/2}`) feed sparse-matrix propagation.
    """

    edge_index: Tensor
    num_nodes: int
    num_users: int
    adj: Tensor
    adj_self_loops: Tensor
    #: mean aggregation :math:`D_{in}^{-1} A` and its transpose (not symmetric), built on first use
    _adj_mean: Optional[tuple[Tensor, Tensor]] = None

    @classmethod
    def from_edge_index(cls, edge_index: Tensor, num_nodes: int, num_users: int) -> "Graph":
        return cls(
            edge_index=edge_index,
            num_nodes=num_nodes,
            num_users=num_users,
            adj=normalized_adjacency(edge_index, num_nodes, add_self_loops=False),
            adj_self_loops=normalized_adjacency(edge_index, num_nodes, add_self_loops=True),
        )

    @property
    def adj_mean(self) -> tuple[Tensor, Tensor]:
        """``(D_in^-1 A, its transpose)`` as CSR on the graph's device."""
        if self._adj_mean is None:
            pair = mean_adjacency(self.edge_index.cpu(), self.num_nodes)
            self._adj_mean = (pair[0].to(self.adj.device), pair[1].to(self.adj.device))
        return self._adj_mean

    def to(self, device) -> "Graph":
        return Graph(
            edge_index=self.edge_index.to(device),
            num_nodes=self.num_nodes,
            num_users=self.num_users,
            adj=self.adj.to(device),
            adj_self_loops=self.adj_self_loops.to(device),
            _adj_mean=None if self._adj_mean is None else (self._adj_mean[0].to(device), self._adj_mean[1].to(device)),
        )

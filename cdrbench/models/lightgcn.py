"""LightGCN propagation through a normalised sparse CSR adjacency."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from cdrbench.data.graph import Graph
from cdrbench.models.embedding import NodeEmbeddings
from cdrbench.models.sparse import spmm


class LightGCNEncoder(NodeEmbeddings):
    r"""LightGCN (He et al., SIGIR 2020) as an encoder: embeddings propagated without weights or
    non-linearities and averaged over layers,

    .. math::
        E^{(l+1)} = D^{-1/2} A D^{-1/2} E^{(l)}, \qquad
        E = \sum_{l=0}^{L} \alpha_l E^{(l)}, \quad \alpha_l = \tfrac{1}{L+1},

    on the bipartite graph with users ``[0, U)`` and items ``[U, U + I)``. The propagation is a
    ``torch.sparse`` CSR SpMM with the precomputed :attr:`Graph.adj` (equal to PyG's
    ``LGConv(normalize=True)`` on ``edge_index``, about ten times faster on CPU). Scoring is left
    to the caller: :math:`\hat y_{ui} = e_u^\top e_i`.

    Args:
        num_users: users.
        num_items: items (several domains' item blocks stacked, when training on them jointly).
        embedding_dim: embedding width.
        num_layers: propagation layers :math:`L`.
        init_std: :math:`\mathcal N(0, \text{init\_std}^2)` initialisation; ``None`` = Xavier-normal
            (RecBole; PyG's LightGCN uses the same).
        sparse: refused (``True`` is an error): propagation reads the whole table, so the
            gradient is dense.
    """

    def __init__(
        self, num_users: int, num_items: int, embedding_dim: int = 64, num_layers: int = 2, init_std: Optional[float] = None,
        sparse: bool = False,
    ):
        super().__init__(num_users, num_items, embedding_dim, init_std, sparse)
        self.num_layers = num_layers

    def propagate(self, adj: Tensor) -> Tensor:
        """Layer-averaged node embeddings ``[U + I, d]``."""
        x = self.embedding.weight
        total = x
        for _ in range(self.num_layers):
            x = spmm(adj, x)
            total = total + x
        return total / (self.num_layers + 1)

    def forward(self, graph: Graph) -> tuple[Tensor, Tensor]:
        """Return ``(user_embeddings [U, d], item_embeddings [I, d])`` after propagation."""
        return self.split(self.propagate(graph.adj))

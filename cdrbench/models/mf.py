"""Matrix factorisation (the BPR-MF backbone)."""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from cdrbench.data.graph import Graph
from cdrbench.models.embedding import NodeEmbeddings


class MFEncoder(NodeEmbeddings):
    r"""Plain user and item embedding tables; the score of a pair is :math:`e_u^\top e_i`.

    Args:
        num_users: users in the shared user space.
        num_items: items (all domains stacked, when the method trains on several).
        embedding_dim: width of the embeddings.
        init_std: embeddings start at :math:`\mathcal N(0, \text{init\_std}^2)`; ``None`` uses
            Xavier-normal, as RecBole does.
        sparse: sparse gradients of the batch's rows (needs ``optimizer=sparse_adam``; see
            :class:`~cdrbench.models.embedding.NodeEmbeddings`).
    """

    row_lookup = True

    def forward(self, graph: Optional[Graph] = None) -> tuple[Tensor, Tensor]:
        """Return ``(user_embeddings [U, d], item_embeddings [I, d])``; the graph is unused."""
        return self.split(self.embedding.weight)

    def batch_embeddings(self, graph, users: Tensor, *item_sets: Tensor) -> tuple[Tensor, ...]:
        """The batch's rows only, by look-up (sparse gradients when ``sparse=True``)."""
        return (self.embedding(users), *(self.embedding(items + self.num_users) for items in item_sets))

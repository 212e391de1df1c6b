"""Matrix factorisation (the BPR-MF backbone)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from cdrbench.data.graph import Graph


class MFEncoder(torch.nn.Module):
    r"""Plain user and item embedding tables; the score of a pair is :math:`e_u^\top e_i`.

    Args:
        num_users: users in the shared user space.
        num_items: items (all domains stacked, when the method trains on several).
        embedding_dim: width of the embeddings.
        init_std: embeddings start at :math:`\mathcal N(0, \text{init\_std}^2)`; ``None`` uses
            Xavier-normal, as RecBole does.
    """

    def __init__(self, num_users: int, num_items: int, embedding_dim: int = 64, init_std: Optional[float] = None):
        super().__init__()
        self.num_users = num_users
        self.num_items = num_items
        self.embedding = torch.nn.Embedding(num_users + num_items, embedding_dim)
        if init_std is None:
            torch.nn.init.xavier_normal_(self.embedding.weight)
        else:
            torch.nn.init.normal_(self.embedding.weight, std=init_std)

    def forward(self, graph: Optional[Graph] = None) -> tuple[Tensor, Tensor]:
        """Return ``(user_embeddings [U, d], item_embeddings [I, d])``; the graph is unused."""
        weight = self.embedding.weight
        return weight[: self.num_users], weight[self.num_users :]

    def ego_embeddings(self, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        """Layer-0 embeddings of a batch (what L2 regularisation is applied to)."""
        return self.embedding(users), self.embedding(items + self.num_users)

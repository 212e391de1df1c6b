"""The user/item embedding table every collaborative-filtering encoder starts from."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


class NodeEmbeddings(torch.nn.Module):
    r"""One table for users ``[0, U)`` and items ``[U, U + I)`` (the bipartite node layout).

    Args:
        num_users: users.
        num_items: items (several domains' item blocks stacked, when training on them jointly).
        embedding_dim: embedding width.
        init_std: :math:`\mathcal N(0, \text{init\_std}^2)` initialisation; ``None`` =
            Xavier-normal (RecBole and PyG's LightGCN).
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

    def split(self, nodes: Tensor) -> tuple[Tensor, Tensor]:
        """``[U + I, d]`` node rows -> ``(users [U, d], items [I, d])``."""
        return nodes[: self.num_users], nodes[self.num_users :]

    def ego_embeddings(self, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        """Layer-0 embeddings of a batch (what L2 regularisation is applied to)."""
        return self.embedding(users), self.embedding(items + self.num_users)

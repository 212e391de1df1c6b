"""The user/item embedding table every collaborative-filtering encoder starts from."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from cdrbench.errors import ConfigError


class NodeEmbeddings(torch.nn.Module):
    r"""One table for users ``[0, U)`` and items ``[U, U + I)`` (the bipartite node layout).

    Args:
        num_users: users.
        num_items: items (several domains' item blocks stacked, when training on them jointly).
        embedding_dim: embedding width.
        init_std: :math:`\mathcal N(0, \text{init\_std}^2)` initialisation; ``None`` =
            Xavier-normal (RecBole and PyG's LightGCN).
        sparse: row look-ups (:meth:`batch_embeddings` of an encoder that does not propagate,
            :meth:`ego_embeddings`) give *sparse* gradients: only the batch's rows, so that a
            step with a sparse-capable optimiser (``optimizer=sparse_adam``,
            :class:`cdrbench.train.optim.LazyAdam`) costs O(batch) instead of O(table). Only for
            encoders that score from looked-up rows (:attr:`row_lookup`); a propagating encoder
            reads the whole table at every step, so its gradient is dense and ``sparse=True``
            is refused there.
    """

    #: whether :meth:`batch_embeddings` reads only the batch's rows (no propagation)
    row_lookup: bool = False

    def __init__(
        self, num_users: int, num_items: int, embedding_dim: int = 64, init_std: Optional[float] = None,
        sparse: bool = False,
    ):
        super().__init__()
        if sparse and not self.row_lookup:
            raise ConfigError(
                f"backbone.sparse=true: {type(self).__name__} propagates over the whole embedding table at every "
                "step, so its gradient is dense; sparse gradients apply to encoders that look rows up (backbone=mf)"
            )
        self.num_users = num_users
        self.num_items = num_items
        self.sparse = bool(sparse)
        self.embedding = torch.nn.Embedding(num_users + num_items, embedding_dim, sparse=self.sparse)
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

    def batch_embeddings(self, graph, users: Tensor, *item_sets: Tensor) -> tuple[Tensor, ...]:
        """Final embeddings of a batch: ``(users [B, d], items [B, d] for each item set)``.

        Propagating encoders compute every node and index the batch; a row-lookup encoder
        overrides this to read the batch's rows only (what makes sparse gradients possible).
        ``index_select`` rather than ``x[index]``: its backward (``index_add_``) is deterministic
        on CPU with several threads, the advanced-indexing one is not (unless torch's
        deterministic mode picks its slower sorted path)."""
        user_emb, item_emb = self(graph)
        return (user_emb.index_select(0, users), *(item_emb.index_select(0, items) for items in item_sets))

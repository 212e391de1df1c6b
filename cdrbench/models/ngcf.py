"""NGCF (Wang et al., SIGIR 2019)."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from cdrbench.data.graph import Graph
from cdrbench.models.embedding import NodeEmbeddings
from cdrbench.models.sparse import spmm


class NGCFEncoder(NodeEmbeddings):
    r"""Neural Graph Collaborative Filtering as an encoder. Each layer computes

    .. math::
        E^{(l+1)} = \mathrm{LeakyReLU}\big((\hat A + I) E^{(l)} W_1^{(l)}
                    + (\hat A E^{(l)} \odot E^{(l)}) W_2^{(l)}\big),

    with :math:`\hat A = D^{-1/2} A D^{-1/2}` (a CSR SpMM), message dropout, and row-wise L2
    normalisation of each layer's output; the final embedding concatenates all layers,
    :math:`e = [e^{(0)} \| \dots \| e^{(L)}]` (so its width is ``embedding_dim + sum(hidden)``).

    Args:
        num_users, num_items: node counts (users first).
        embedding_dim: width of the layer-0 embeddings.
        hidden: output width of each propagation layer (``[64, 64, 64]`` in the paper).
        message_dropout: dropout on each layer's output during training.
        init_std: ``None`` = Xavier-normal embeddings.
        sparse: refused (``True`` is an error): propagation reads the whole table.
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        embedding_dim: int = 64,
        hidden: Sequence[int] = (64, 64, 64),
        message_dropout: float = 0.1,
        init_std: Optional[float] = None,
        sparse: bool = False,
    ):
        super().__init__(num_users, num_items, embedding_dim, init_std, sparse)
        widths = [embedding_dim, *hidden]
        self.w1 = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.w2 = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.message_dropout = message_dropout

    def propagate(self, adj: Tensor) -> Tensor:
        x = self.embedding.weight
        layers = [x]
        for w1, w2 in zip(self.w1, self.w2):
            side = spmm(adj, x)
            x = F.leaky_relu(w1(side + x) + w2(side * x), negative_slope=0.2)
            x = F.dropout(x, p=self.message_dropout, training=self.training)
            layers.append(F.normalize(x, p=2, dim=1))
        return torch.cat(layers, dim=1)

    def forward(self, graph: Graph) -> tuple[Tensor, Tensor]:
        return self.split(self.propagate(graph.adj))

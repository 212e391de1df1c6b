r"""PCRec's pre-training model: GCC's GIN encoder and MoCo contrast (spec ``pcrec.md`` §3.4-3.5).

The paper names the pieces -- "the Graph Isomorphism Network" as encoder, InfoNCE (Eq. 1), MoCo
with a K-size key queue and a momentum encoder :math:`\theta_k \leftarrow m\theta_k +
(1-m)\theta_q` -- and GCC (THUDM/GCC: ``gcc/models/gin.py``, ``graph_encoder.py``,
``contrastive/memory_moco.py``, ``train.py``) gives their structure. Re-implemented with PyG's
``GINConv``; nothing is copied.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GINConv, global_add_pool

from cdrbench.methods.pcrec.features import GraphBatch
from cdrbench.models.losses import info_nce_logits

SCHEDULES = ("warmup_linear", "constant")


class GCCEncoder(nn.Module):
    r"""GIN encoder of a subgraph (GCC's ``UnsupervisedGIN`` with degree input).

    Input per node: ``[pos (pos_dim) | Embedding(max_degree + 1, deg_dim)(degree) | ego (1)]``.
    Each of the ``num_gin_layers`` layers is

    .. math::
        h' = \mathrm{ReLU}(\mathrm{BN}(\mathrm{ReLU}(\mathrm{BN}(\mathrm{MLP}((1 + 0)\,h_v
             + \textstyle\sum_{w \in N(v)} h_w)))))

    with MLP = Linear(in, hidden) -> BN -> ReLU -> Linear(hidden, hidden): the inner BN -> ReLU
    is GCC's ``ApplyNodeFunc``, the outer one its per-layer ``batch_norms`` (GCC's double
    BatchNorm, kept). Readout over all ``num_gin_layers + 1`` representations (the input
    included): :math:`\sum_l \mathrm{Dropout}(W_l\, \mathrm{sumpool}(h^{(l)}))`, then L2
    normalisation (eps 1e-5) when ``normalize``.

    Args:
        pos_dim, deg_dim, max_degree: input features (49 = 32 + 16 + 1 by default).
        hidden: width of every layer and of the output.
        num_gin_layers: GIN convolutions (GCC's ``--num-layer 5`` counts the input as one).
        readout_dropout: dropout on each pooled head.
        normalize: L2-normalise the output.
    """

    def __init__(self, pos_dim: int = 32, deg_dim: int = 16, max_degree: int = 512, hidden: int = 64,
                 num_gin_layers: int = 4, readout_dropout: float = 0.5, normalize: bool = True):
        super().__init__()
        self.pos_dim, self.max_degree, self.normalize = pos_dim, max_degree, normalize
        self.degree_embedding = nn.Embedding(max_degree + 1, deg_dim)
        in_dim = pos_dim + deg_dim + 1
        self.input_dim = in_dim
        self.convs = nn.ModuleList()
        self.batch_norms = nn.ModuleList()
        for layer in range(num_gin_layers):
            mlp = nn.Sequential(
                nn.Linear(in_dim if layer == 0 else hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            )
            self.convs.append(GINConv(mlp, eps=0.0, train_eps=False))
            self.batch_norms.append(nn.BatchNorm1d(hidden))
        self.heads = nn.ModuleList(nn.Linear(in_dim if layer == 0 else hidden, hidden)
                                   for layer in range(num_gin_layers + 1))
        self.dropout = nn.Dropout(readout_dropout)

    def node_input(self, batch: GraphBatch) -> Tensor:
        degree = self.degree_embedding(batch.degree.clamp(max=self.max_degree))
        return torch.cat([batch.pos, degree, batch.ego.unsqueeze(1)], dim=1)

    def forward(self, batch: GraphBatch) -> Tensor:
        """``[num_graphs, hidden]`` subgraph embeddings."""
        h = self.node_input(batch)
        out = self.dropout(self.heads[0](global_add_pool(h, batch.batch, size=batch.num_graphs)))
        for conv, norm, head in zip(self.convs, self.batch_norms, self.heads[1:]):
            h = F.relu(norm(conv(h, batch.edge_index)))
            out = out + self.dropout(head(global_add_pool(h, batch.batch, size=batch.num_graphs)))
        return F.normalize(out, p=2, dim=-1, eps=1e-5) if self.normalize else out


class MoCo(nn.Module):
    r"""Momentum contrast over subgraph pairs (paper Eq. 1; GCC ``MemoryMoCo``).

    ``query`` is :math:`f_q`; ``key`` starts as its exact copy and moves only by
    :meth:`momentum_update` (parameters only: BatchNorm running statistics are not averaged).
    ``queue`` holds the last ``queue_size`` keys (a ring buffer; initial rows uniform in
    :math:`\pm\sqrt{3/d}`, so each has expected squared norm 1). The loss of a batch is

    .. math::
        L = -\log \frac{e^{q\cdot k^+/\tau}}{e^{q\cdot k^+/\tau} + \sum_{j=1}^{K} e^{q\cdot n_j/\tau}}

    (``info_nce_logits``: cross-entropy with the positive at index 0), then the batch's keys are
    enqueued. ``key_bn_train``: the key encoder runs in eval mode (no dropout) with its
    BatchNorm layers in train mode, normalising by the key batch's statistics (GCC).
    """

    def __init__(self, encoder: GCCEncoder, queue_size: int = 512, momentum: float = 0.999, tau: float = 0.07,
                 key_bn_train: bool = True):
        super().__init__()
        self.query = encoder
        self.key = copy.deepcopy(encoder)
        self.key.requires_grad_(False)
        self.momentum, self.tau, self.key_bn_train = momentum, tau, key_bn_train
        dim = encoder.heads[0].out_features
        bound = 1.0 / math.sqrt(dim / 3)
        self.register_buffer("queue", torch.rand(queue_size, dim) * 2 * bound - bound)
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True) -> "MoCo":
        super().train(mode)
        self.key.eval()
        if self.key_bn_train:
            for module in self.key.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.train(mode)
        return self

    def forward(self, view_q: GraphBatch, view_k: GraphBatch) -> Tensor:
        """InfoNCE loss of a batch of positive pairs; enqueues the keys."""
        q = self.query(view_q)
        with torch.no_grad():
            k = self.key(view_k)
        loss = info_nce_logits((q * k).sum(-1), q @ self.queue.clone().T, self.tau)
        self.enqueue(k)
        return loss

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``keys`` over the oldest rows (a batch is never larger than the queue)."""
        size = self.queue.shape[0]
        index = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue.index_copy_(0, index, keys)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % size)

    @torch.no_grad()
    def momentum_update(self) -> None:
        """:math:`\\theta_k \\leftarrow m\\theta_k + (1 - m)\\theta_q` on parameters only."""
        for p_k, p_q in zip(self.key.parameters(), self.query.parameters()):
            # two products, then their sum: exactly the formula's float32 rounding (no fused add)
            p_k.mul_(self.momentum).add_(p_q.detach() * (1.0 - self.momentum))


def warmup_linear(progress: float, warmup: float = 0.1) -> float:
    """GCC's schedule: linear from 0 to 1 over the first ``warmup`` share of the steps, then
    linear down to 0 at the end (``progress`` = step / total steps)."""
    if progress < warmup:
        return progress / warmup
    return max(0.0, (progress - 1.0) / (warmup - 1.0))


class WarmupLinear:
    """``LambdaLR`` multiplier of step ``s``: :func:`warmup_linear` (``s / total_steps``)."""

    def __init__(self, total_steps: int, warmup: float):
        self.total_steps, self.warmup = max(1, int(total_steps)), warmup

    def __call__(self, step: int) -> float:
        return warmup_linear(step / self.total_steps, self.warmup)


def pretrain_scheduler(optimizer: torch.optim.Optimizer, schedule: str, total_steps: int,
                       warmup: float) -> torch.optim.lr_scheduler.LambdaLR:
    if schedule == "warmup_linear":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupLinear(total_steps, warmup))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

r"""Graph-based behaviour importance perceptron of BiGNAS (paper Eqs. 5–6; design spec §3).

The perceptron weights each source training interaction :math:`e_{Si} = (u_k, v_{Sl})` in the
main loss (paper Eq. 5):

.. math::
    \mathcal{L}_{main} = \frac{1}{|B_T|}\sum_{j \in B_T} \ell(\hat{y}_{Tj}, y_{Tj})
    + \sum_{i \in B_S} \gamma_{Si}\, \ell(\hat{y}_{Si}, y_{Si}).

Its parameters φ are trained only by the implicit hypergradient
(:mod:`cdrbench.methods.bignas.hypergrad`).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Linear, Module, ModuleList, Parameter, ReLU, Sequential
from torch_geometric.nn import SAGEConv

from cdrbench.data.graph import Graph

FORMS = ("three_level", "item_only")
NORMS = ("batch_softmax",)


def train_union_edge_index(source_graph: Graph, target_graph: Graph) -> Tensor:
    r"""Edge index of :math:`\mathcal{G}_{train}` = source edges ∪ target-train edges over the node
    layout ``[users (U) ‖ source items (I_s) ‖ target items (I_t)]`` expected by
    :class:`ImportancePerceptron` (target item ``t`` becomes node ``U + I_s + t``)."""
    if source_graph.num_users != target_graph.num_users:
        raise ValueError("source and target graphs disagree on the number of users")
    U = source_graph.num_users
    num_source_items = source_graph.num_nodes - U
    target = target_graph.edge_index
    target = torch.where(target >= U, target + num_source_items, target)
    return torch.cat([source_graph.edge_index, target], dim=1)


def uniform_weights(batch_size: int, device=None, dtype: torch.dtype = torch.float32) -> Tensor:
    r""":math:`\gamma_{Si} = 1/|B_S|` (``no_impo`` ablation): the source term becomes the plain
    mean BCE with domain weight 1."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return torch.full((batch_size,), 1.0 / batch_size, device=device, dtype=dtype)


class ImportancePerceptron(Module):
    r"""Importance weights :math:`\gamma_{Si}` for a batch of source interactions.

    ``form="three_level"`` (paper Eq. 6, spec §3.1):

    .. math::
        \gamma_{Si} = \mathrm{ReLU}(\gamma_S) \cdot \mathrm{softmax}_{b \in B_S}
        \big(\gamma_{v} \cdot \gamma_{u,v}\big)_i, \quad
        \gamma_v = \mathrm{MLP}_{item}(\mathbf{h}_v), \quad
        \gamma_{u,v} = \mathrm{MLP}_{pair}([\mathbf{h}'_u \| \mathbf{h}'_v]),

    with :math:`\mathbf{h}_v` the supernet readout of source item :math:`v` (width
    ``rep_dim`` = :math:`d + Lh`), :math:`(\mathbf{h}'_u, \mathbf{h}'_v) = \mathrm{SAGE}_2(
    [\mathbf{E}_U; \mathbf{E}_S; \mathbf{E}_T], \mathcal{G}_{train})`, both MLPs
    ``in -> hidden -> ReLU -> 1``.

    ``form="item_only"`` (reference code, spec §3.2):

    .. math::
        \gamma_{Si} = \mathrm{ReLU}(\gamma_S) \cdot \mathrm{softmax}_{b \in B_S}\big(
        \mathbf{w}^\top \mathrm{SAGE}_2([\mathbf{E}_U; \mathbf{E}_S], \mathcal{G}_S)_{v(b)} + c\big)_i.

    The normalisation σ of Eq. 6 is a softmax over the source batch, so the weights of a batch
    sum to :math:`\mathrm{ReLU}(\gamma_S)`. :math:`\gamma_S` starts at 1. The SAGE layers use
    ``gnn_aggr`` (max by default) with no activation between them, and always run on an
    ``edge_index``: max aggregation over a sparse CSR is not twice differentiable.

    Args:
        form: ``"three_level"`` or ``"item_only"``.
        num_users, num_source_items, num_target_items: node-layout sizes (used to validate
            inputs and locate item nodes).
        rep_dim: supernet readout width :math:`d + Lh` (input of ``MLP_item``).
        emb_dim: embedding width :math:`d` (SAGE input).
        hidden: SAGE and MLP width (16).
        gnn_layers: number of SAGE layers (2).
        gnn_aggr: SAGE aggregation (``"max"``).
        norm: ``"batch_softmax"`` (the only normalisation specified).
    """

    def __init__(
        self,
        form: str,
        num_users: int,
        num_source_items: int,
        num_target_items: int,
        rep_dim: int,
        emb_dim: int,
        hidden: int = 16,
        gnn_layers: int = 2,
        gnn_aggr: str = "max",
        norm: str = "batch_softmax",
    ):
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"unknown perceptron form {form!r}; valid: {list(FORMS)}")
        if norm not in NORMS:
            raise ValueError(f"unknown perceptron norm {norm!r}; valid: {list(NORMS)}")
        if gnn_layers < 1:
            raise ValueError(f"gnn_layers must be >= 1, got {gnn_layers}")
        self.form, self.norm = form, norm
        self.num_users, self.num_source_items, self.num_target_items = num_users, num_source_items, num_target_items
        self.rep_dim, self.emb_dim, self.hidden = rep_dim, emb_dim, hidden

        self.domain_weight = Parameter(torch.ones(()))  # gamma_S
        self.convs = ModuleList(
            [SAGEConv(emb_dim if i == 0 else hidden, hidden, aggr=gnn_aggr) for i in range(gnn_layers)]
        )
        if form == "three_level":
            self.item_mlp: Optional[Sequential] = Sequential(Linear(rep_dim, hidden), ReLU(), Linear(hidden, 1))
            self.pair_mlp: Optional[Sequential] = Sequential(Linear(2 * hidden, hidden), ReLU(), Linear(hidden, 1))
            self.item_score: Optional[Linear] = None
        else:
            self.item_mlp = self.pair_mlp = None
            self.item_score = Linear(hidden, 1)

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.domain_weight.fill_(1.0)
        for conv in self.convs:
            conv.reset_parameters()
        heads = [self.item_mlp, self.pair_mlp] if self.form == "three_level" else [self.item_score]
        for head in heads:
            for m in head.modules():
                if isinstance(m, Linear):
                    m.reset_parameters()

    def gnn(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """Stacked SAGE layers, no activation in between (reference code)."""
        for conv in self.convs:
            x = conv(x, edge_index)
        return x

    def forward(
        self,
        users: Tensor,
        source_items: Tensor,
        user_emb: Tensor,
        source_item_emb: Tensor,
        edge_index: Tensor,
        target_item_emb: Optional[Tensor] = None,
        source_item_reps: Optional[Tensor] = None,
        detach_inputs: bool = False,
    ) -> Tensor:
        r"""Weights :math:`\gamma_{Si}` of a source batch, shape ``[B]``.

        Args:
            users, source_items: the batch's ``(user id, source item id)`` pairs, ``[B]`` each.
            user_emb, source_item_emb: live :math:`\mathbf{E}_U` ``[U, d]``, :math:`\mathbf{E}_S`
                ``[I_s, d]`` (the embedding tables' ``weight``; gradients flow into them unless
                ``detach_inputs``).
            edge_index: the perceptron graph over ``[users ‖ source items ‖ target items]``:
                :func:`train_union_edge_index` (``three_level``, paper :math:`\mathcal{G}_{train}`)
                or the source graph's ``edge_index`` (``item_only`` / ``perceptor.graph=source``).
            target_item_emb: :math:`\mathbf{E}_T` ``[I_t, d]``; used by ``three_level`` (nodes
                ``U + I_s + t``). May be ``None`` when ``edge_index`` has no target nodes.
            source_item_reps: supernet readout rows of the source items ``[I_s, d + Lh]``
                (``reps_s[U:]``); required by ``three_level``.
            detach_inputs: cut the gradient into every input tensor (spec flag 24,
                ``perceptor.detach_inputs``), so the training loss reaches the model only through
                the prediction path, never through the weights.
        """
        if detach_inputs:
            user_emb, source_item_emb = user_emb.detach(), source_item_emb.detach()
            target_item_emb = None if target_item_emb is None else target_item_emb.detach()
            source_item_reps = None if source_item_reps is None else source_item_reps.detach()
        if user_emb.size(0) != self.num_users or source_item_emb.size(0) != self.num_source_items:
            raise ValueError("embedding tables do not match the perceptron's num_users/num_source_items")
        if target_item_emb is not None and target_item_emb.size(0) != self.num_target_items:
            raise ValueError("target embedding table does not match the perceptron's num_target_items")

        U = self.num_users
        item_nodes = U + source_items
        if self.form == "three_level":
            if source_item_reps is None:
                raise ValueError("three_level perceptron needs source_item_reps (supernet item readout)")
            parts = [user_emb, source_item_emb]
            if target_item_emb is not None:
                parts.append(target_item_emb)
            h = self.gnn(torch.cat(parts, dim=0), edge_index)
            gamma_v = self.item_mlp(source_item_reps[source_items]).squeeze(-1)
            gamma_uv = self.pair_mlp(torch.cat([h[users], h[item_nodes]], dim=-1)).squeeze(-1)
            score = gamma_v * gamma_uv
        else:
            h = self.gnn(torch.cat([user_emb, source_item_emb], dim=0), edge_index)
            score = self.item_score(h[item_nodes]).squeeze(-1)
        return F.relu(self.domain_weight) * F.softmax(score, dim=0)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(form={self.form!r}, rep_dim={self.rep_dim}, "
            f"emb_dim={self.emb_dim}, hidden={self.hidden}, gnn_layers={len(self.convs)})"
        )

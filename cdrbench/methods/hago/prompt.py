r"""Graph prompting for the target domain (HAGO §3.3, spec §3 Eqs. 5-7, §5).

* **Eq. 5** (:class:`GraphPrompt`): :math:`\hat e_u = e_u^{pre} + p_u`, :math:`\hat e_i = e_i^{pre} + p_i`.
  :math:`e^{pre}` are the pre-trained ID tables (``tune.pretrained_source=ego``; or the pre-trained
  encoder's output, ``encoder_output``), kept as *buffers*: they cannot receive gradients and stay
  bit-identical. :math:`p` are learnable, one per user and per target item, Xavier-normal (reference
  code; ``tune.prompt_init=zeros``). The prompt is added, not concatenated.
* **Eq. 6** (:class:`TargetRecommender`): :math:`H = \mathrm{Enc}_L(A_T, \hat E)` with the frozen
  pre-trained encoder over the binary target-*training* graph :math:`A_T` (``tune.graph=target``;
  ``unified``: the pre-training graph with its coordinators, weights fixed at their pre-trained
  values), :math:`\hat y_{ui} = h_u^\top h_i`.
* **Eq. 7** (:meth:`TargetRecommender.loss`): BPR over ``(u, i, j)`` triples plus
  :math:`\lambda\,\mathrm{Reg}` on the batch's prompt rows: ``batch_frobenius``
  :math:`(\|P_U[B_u]\|_F + \|P_I[B_i]\|_F + \|P_I[B_j]\|_F)/|B|` (RecBole's ``EmbLoss`` as the
  reference code calls it, :func:`~cdrbench.models.losses.embedding_l2` ``frobenius``) or
  ``squared_l2`` :math:`\tfrac{1}{2|B|}\sum \|\cdot\|_F^2` (the paper's :math:`\lambda\|\Theta\|^2`
  in LightGCN's batch form).

The ``backbone`` variant (paper: "Backbone" / "LightGCN") uses :class:`TrainableInputs` instead of
a prompt: plain Xavier-normal tables trained end to end with the same loss.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cdrbench.methods.hago.encoders import WeightedGraph
from cdrbench.models.embedding import NodeEmbeddings
from cdrbench.models.losses import bpr_loss, embedding_l2

REG_FORMS = {"batch_frobenius": "frobenius", "squared_l2": "squared_half"}
PROMPT_INITS = ("xavier_normal", "zeros")


class GraphPrompt(torch.nn.Module):
    """Eq. 5 (module docstring).

    Args:
        pretrained: frozen node features ``[N, d]`` of the tuning graph's nodes.
        user_nodes: node ids of the users ``[U]`` (user ``u`` is ``user_nodes[u]``).
        item_nodes: node ids of the target items ``[I_t]``.
        init: ``xavier_normal`` | ``zeros``.
    """

    def __init__(self, pretrained: Tensor, user_nodes: Tensor, item_nodes: Tensor, init: str = "xavier_normal"):
        super().__init__()
        self.register_buffer("pretrained", pretrained.detach().clone())
        self.register_buffer("user_nodes", user_nodes.long())
        self.register_buffer("item_nodes", item_nodes.long())
        dim = pretrained.shape[1]
        self.user_prompt = torch.nn.Parameter(torch.zeros(user_nodes.numel(), dim, device=pretrained.device))
        self.item_prompt = torch.nn.Parameter(torch.zeros(item_nodes.numel(), dim, device=pretrained.device))
        if init == "xavier_normal":  # two tables, as the reference code's two embeddings
            torch.nn.init.xavier_normal_(self.user_prompt)
            torch.nn.init.xavier_normal_(self.item_prompt)
        elif init != "zeros":
            raise ValueError(f"prompt init {init!r} is not one of {PROMPT_INITS}")

    def forward(self) -> Tensor:
        return self.pretrained.index_add(0, self.user_nodes, self.user_prompt).index_add(0, self.item_nodes, self.item_prompt)

    def regularised_rows(self, users: Tensor, pos: Tensor, neg: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The rows Eq. 7's Reg term sees: the batch's prompt rows."""
        return self.user_prompt[users], self.item_prompt[pos], self.item_prompt[neg]


class TrainableInputs(NodeEmbeddings):
    """Plain trainable tables (``backbone``): users ``[0, U)``, target items ``[U, U + I_t)``."""

    def forward(self) -> Tensor:
        return self.embedding.weight

    def regularised_rows(self, users: Tensor, pos: Tensor, neg: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        eu, ei = self.ego_embeddings(users, pos)
        return eu, ei, self.embedding(neg + self.num_users)


class TargetRecommender(torch.nn.Module):
    """Eqs. 6-7 (module docstring).

    Args:
        inputs: :class:`GraphPrompt` or :class:`TrainableInputs` (``inputs() -> [N, d]``).
        encoder: the (frozen or, for ``backbone``, trainable) encoder.
        graph: the tuning graph (pattern and fixed weights).
        user_nodes, item_nodes: node ids of the users and of the target items in ``graph``.
    """

    def __init__(self, inputs: torch.nn.Module, encoder: torch.nn.Module, graph: WeightedGraph,
                 user_nodes: Tensor, item_nodes: Tensor):
        super().__init__()
        self.inputs = inputs
        self.encoder = encoder
        self.graph = graph
        self.register_buffer("user_nodes", user_nodes.long())
        self.register_buffer("item_nodes", item_nodes.long())

    def forward(self) -> tuple[Tensor, Tensor]:
        """``(h_users [U, d], h_target_items [I_t, d])``."""
        h = self.encoder(self.inputs(), self.graph)
        return h[self.user_nodes], h[self.item_nodes]

    def loss(self, users: Tensor, pos: Tensor, neg: Tensor, reg_weight: float, reg_form: str) -> Tensor:
        user_emb, item_emb = self()
        u = user_emb[users]
        loss = bpr_loss((u * item_emb[pos]).sum(-1), (u * item_emb[neg]).sum(-1))
        if reg_weight:
            loss = loss + reg_weight * embedding_l2(*self.inputs.regularised_rows(users, pos, neg), form=REG_FORMS[reg_form])
        return loss

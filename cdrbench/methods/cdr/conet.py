r"""CoNet: collaborative cross networks (Hu, Zhang & Yang, CIKM 2018).

Spec: ``shared/design/baselines.md`` §3. Reference: RecBole-CDR ``d339918``
``recbole_cdr/model/cross_domain_recommender/conet.py`` (``source_forward``, ``target_forward``,
``calculate_loss``, ``predict``, ``full_sort_predict``) and ``properties/model/CoNet.yaml``.

Two MLP towers (the base networks), one per domain, each reading :math:`x = [e_u \Vert e_i]`,
joined at every layer :math:`l` by a cross connection :math:`H^l` that is **one matrix used in
both directions** (paper and code):

.. math::
    a_s^{l+1} = \mathrm{ReLU}(W_s^l a_s^l + H^l a_t^l), \qquad
    a_t^{l+1} = \mathrm{ReLU}(W_t^l a_t^l + H^l a_s^l),

:math:`\hat r = \sigma(h^\top a^L)` per tower, trained on :math:`\mathrm{BCE}_s + \mathrm{BCE}_t +`
a regulariser (equation numbers not cited; the paper text was not at hand). The cross term is
added only on rows of *overlapping* users (both domains have training rows); other rows run their
tower alone.

**The spec describes an older revision of the code** (``0ac32e1``, April 2022: source and target
rows of a step paired by batch position, cross terms where both rows overlap). RecBole-CDR's
current code (``d339918``, the one followed here) instead feeds the *same* ``(u, i)`` row through
both towers: a target row's cross input is the source tower on :math:`[U_s[u] \Vert V_s[i]]`,
where :math:`V_s` is the source tower's own table over *all* items (so target items have a
source-tower row too), and vice versa; each domain's loss reads only its own tower's output.

Differences (named flags; ids of the spec's table):

* N1 ``share_user_emb``: one user table for both towers (the paper's figure; not re-checked in
  the PDF) | one per tower (code).
* N2 ``pairing``: ``same_user`` (paper: a target row ``(u, i_t)`` of an overlapping user is paired
  with a source row ``(u, i_s)`` of the same user, positives with a random source positive,
  sampled negatives with a sampled source negative, or with a random labelled source row under
  ``supervision=labels``) | ``same_row`` (code ``d339918``, above; the source rows train in their
  own batches).
* N3 ``reg``: ``cross_squared`` :math:`\tfrac12\sum_l \lVert H^l\rVert_F^2` (the paper's L2 form;
  not confirmed) | ``cross_frobenius`` :math:`\sum_l \lVert H^l\rVert_F` (code); times
  ``reg_weight`` (the code reads ``reg_weight`` but never uses it: its weight is 1, the refcode
  profile sets 1.0).
* N4 ``eval_cross``: ``none`` (code ``predict``/``full_sort_predict``: the target tower alone, no
  cross term, although training had one) | ``same_row`` (the training forward of ``same_row``).
* N5 every user is trained and scored; non-overlapping users never get a cross term (code).

Scoring every (user, item) pair goes through the MLP; the first layer is split as
:math:`W[x_u \Vert x_i] = W_u x_u + W_i x_i`, so a chunk of users costs one broadcast add
before the remaining layers (the code runs the whole MLP on repeated rows).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from cdrbench.data.dataset import CrossDomainData
from cdrbench.errors import ConfigError
from cdrbench.methods.cdr.common import (
    DomainRows, JointTraining, PointwiseRows, TwoDomains, check_choice, check_positive, recbole_init,
)
from cdrbench.train.sampling import NegativeSampler

#: bytes of first-layer activations one scoring sub-chunk may hold
GRID_BYTES = 1 << 27


class CrossTowers(torch.nn.Module):
    r"""The two base networks with their cross connections (pure: inputs in, logits out).

    Args:
        in_dim: width of a tower's input (user + item embedding).
        hidden: widths of the hidden layers (RecBole-CDR ``mlp_hidden_size``, [64, 32, 16, 8]).
    """

    def __init__(self, in_dim: int, hidden: Sequence[int]):
        super().__init__()
        dims = [in_dim, *hidden]
        pairs = list(zip(dims[:-1], dims[1:]))
        self.source_layers = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in pairs)
        self.target_layers = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in pairs)
        #: H^l, shared by the two directions
        self.cross = torch.nn.ModuleList(torch.nn.Linear(a, b, bias=False) for a, b in pairs)
        self.source_head = torch.nn.Linear(dims[-1], 1)
        self.target_head = torch.nn.Linear(dims[-1], 1)

    def forward(self, x_s: Tensor, x_t: Tensor, cross: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        """Logits ``(source [B], target [B])``; ``cross`` (bool ``[B]``) marks the rows whose
        layers exchange :math:`H^l a` (``None``: no row does)."""
        mask = None if cross is None else cross.to(x_s.dtype).unsqueeze(-1)
        for w_s, w_t, h in zip(self.source_layers, self.target_layers, self.cross):
            s, t = w_s(x_s), w_t(x_t)
            if mask is not None:
                s, t = s + mask * h(x_t), t + mask * h(x_s)
            x_s, x_t = F.relu(s), F.relu(t)
        return self.source_head(x_s).squeeze(-1), self.target_head(x_t).squeeze(-1)

    def target_alone(self, x_t: Tensor) -> Tensor:
        """Target logits without any cross term (the code's ``predict``)."""
        for w_t in self.target_layers:
            x_t = F.relu(w_t(x_t))
        return self.target_head(x_t).squeeze(-1)

    def target_grid(self, user_t: Tensor, item_t: Tensor, user_s: Optional[Tensor] = None,
                    item_s: Optional[Tensor] = None, cross: Optional[Tensor] = None) -> Tensor:
        """Target logits ``[C, I]`` of every pair of ``C`` users and ``I`` items, where a tower's
        input is ``[user row, item row]``. With ``cross`` (bool ``[C]``) and the source tower's
        rows the forward equals :meth:`forward` row by row; without it, :meth:`target_alone`."""
        d = user_t.shape[1]

        def first(layer: torch.nn.Linear, users: Tensor, items: Tensor, bias: bool = True) -> Tensor:
            # W [x_u || x_i] + b = W_u x_u + (W_i x_i + b): the bias joins the small item part,
            # so the [C, I, h] grid is written once
            w = layer.weight
            item_part = items @ w[:, d:].T
            if bias and layer.bias is not None:
                item_part = item_part + layer.bias
            return (users @ w[:, :d].T).unsqueeze(1) + item_part.unsqueeze(0)

        t = first(self.target_layers[0], user_t, item_t)
        s = None
        if cross is not None:
            s = first(self.source_layers[0], user_s, item_s)
            mask = cross.to(t.dtype).view(-1, 1, 1)
            s, t = s + mask * first(self.cross[0], user_t, item_t, False), t + mask * first(self.cross[0], user_s, item_s, False)
            s = s.relu_()
        t = t.relu_()  # in place: the grid is the largest tensor of an evaluation
        shape = t.shape[:2]
        t = t.reshape(-1, t.shape[-1])
        if s is None:
            for w_t in self.target_layers[1:]:
                t = w_t(t).relu_()
        else:
            s = s.reshape(-1, s.shape[-1])
            flat = mask.expand(*shape, 1).reshape(-1, 1)
            for w_s, w_t, h in zip(self.source_layers[1:], self.target_layers[1:], self.cross[1:]):
                s, t = F.relu(w_s(s) + flat * h(t)), F.relu(w_t(t) + flat * h(s))
        return self.target_head(t).view(shape)


class CoNetNetwork(torch.nn.Module):
    r"""Embedding tables + :class:`CrossTowers`. Items live in one stacked space per tower,
    ``[source items | target items]``; users in one table (``share_user_emb``) or one per tower.
    """

    def __init__(self, num_users: int, num_source_items: int, num_target_items: int, embedding_dim: int,
                 hidden: Sequence[int], share_user_emb: bool):
        super().__init__()
        self.num_source_items = num_source_items
        num_items = num_source_items + num_target_items
        self.user_s = torch.nn.Embedding(num_users, embedding_dim)
        self.user_t = self.user_s if share_user_emb else torch.nn.Embedding(num_users, embedding_dim)
        self.item_s = torch.nn.Embedding(num_items, embedding_dim)
        self.item_t = torch.nn.Embedding(num_items, embedding_dim)
        self.towers = CrossTowers(2 * embedding_dim, hidden)

    def inputs(self, tower: str, users: Tensor, items: Tensor) -> Tensor:
        """``[e_u || e_i]`` of a tower (``items`` in the stacked item space)."""
        if tower == "source":
            return torch.cat([self.user_s(users), self.item_s(items)], dim=-1)
        return torch.cat([self.user_t(users), self.item_t(items)], dim=-1)

    def target_items(self, items: Tensor) -> Tensor:
        return items + self.num_source_items


class SourcePartners:
    """For ``pairing=same_user``: a random source row of the same user for each target row."""

    def __init__(self, rows: DomainRows, supervision: str, num_users: int, generator: torch.Generator):
        self.supervision = supervision
        self.generator = generator
        if supervision == "sampled":
            users, items = rows.positives()
            labels = torch.ones(len(users))
            self.sampler = NegativeSampler.single_domain(rows.user, rows.item, rows.num_items, generator)
        else:
            users, items, labels = rows.user, rows.item, rows.y
        order = torch.argsort(users, stable=True)
        self.items, self.labels = items[order], labels[order]
        counts = torch.bincount(users, minlength=num_users)
        self.counts = counts
        self.starts = torch.cumsum(counts, 0) - counts

    def draw(self, users: Tensor, target_labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(items, labels, has_partner)``: positives get a random source positive of their user
        and sampled negatives a sampled source negative (``sampled``), or any labelled row gets a
        random labelled source row (``labels``)."""
        counts = self.counts[users]
        has = counts > 0
        pick = self.starts[users] + (torch.rand(len(users), generator=self.generator) * counts).long()
        pick = torch.where(has, pick, torch.zeros_like(pick)).clamp(max=max(len(self.items) - 1, 0))
        items, labels = self.items[pick].clone(), self.labels[pick].clone()
        if self.supervision == "sampled":
            negative = target_labels < 0.5
            if negative.any():
                items[negative] = self.sampler.sample(users[negative], torch.zeros(int(negative.sum()), dtype=torch.long))
                labels[negative] = 0.0
        return items, labels, has


class CoNet(JointTraining):
    r"""CoNet (see the module docstring). Top-N ranks the target tower's logit
    :math:`h^\top a^L` (the order of its sigmoid, without ties at saturation); CTR is the
    tower's own :math:`\sigma(h^\top a^L)`.

    Args:
        optimizer: ``optimizer(params)`` (Adam; RecBole-CDR's best Douban lr 5e-3).
        profile: ``paper`` | ``refcode`` (a label; the YAML resolves the flags).
        embedding_dim: 64. mlp_hidden: tower widths ([64, 32, 16, 8]).
        share_user_emb: N1. pairing: ``same_user`` | ``same_row`` (N2).
        reg: ``cross_squared`` | ``cross_frobenius`` (N3); reg_weight: its weight.
        eval_cross: ``none`` | ``same_row`` (N4).
        supervision: ``sampled`` | ``labels``. batch_size: rows per batch and domain, negatives
            included (2048). num_negatives: per positive (1).
    """

    tasks = frozenset({"topn", "ctr"})

    def __init__(
        self,
        optimizer: Callable[..., torch.optim.Optimizer],
        profile: str = "paper",
        embedding_dim: int = 64,
        mlp_hidden: Sequence[int] = (64, 32, 16, 8),
        share_user_emb: bool = True,
        pairing: str = "same_user",
        reg: str = "cross_squared",
        reg_weight: float = 1e-2,
        eval_cross: str = "none",
        supervision: str = "sampled",
        batch_size: int = 2048,
        num_negatives: int = 1,
    ):
        super().__init__()
        check_choice("method.pairing", pairing, ("same_user", "same_row"))
        check_choice("method.reg", reg, ("cross_squared", "cross_frobenius"))
        check_choice("method.eval_cross", eval_cross, ("none", "same_row"))
        check_choice("method.supervision", supervision, ("sampled", "labels"))
        check_positive("method.batch_size", batch_size, 2)
        check_positive("method.num_negatives", num_negatives)
        if not mlp_hidden:
            raise ConfigError("method.mlp_hidden needs at least one layer width")
        if eval_cross == "same_row" and pairing != "same_row":
            raise ConfigError("method.eval_cross=same_row needs method.pairing=same_row (a same_user pair has no "
                              "source item at scoring time)")
        self.optimizer_factory = optimizer
        self.profile = profile
        self.embedding_dim, self.mlp_hidden = embedding_dim, list(mlp_hidden)
        self.share_user_emb, self.pairing = share_user_emb, pairing
        self.reg, self.reg_weight = reg, reg_weight
        self.eval_cross = eval_cross
        self.supervision = supervision
        self.batch_size, self.num_negatives = batch_size, num_negatives

    # ------------------------------------------------------------------ setup
    def setup(self, data: CrossDomainData, device: torch.device, seed: int) -> None:
        self.data, self.device = data, device
        rows = TwoDomains.from_data(data, "conet")
        torch.manual_seed(seed)
        self.model = CoNetNetwork(data.num_users, rows.source.num_items, rows.target.num_items, self.embedding_dim,
                                self.mlp_hidden, self.share_user_emb).to(device)
        recbole_init(self.model)
        self.optimizer = self.optimizer_factory(params=self.model.parameters())
        self.generator = torch.Generator().manual_seed(seed)
        self.overlap = rows.overlap.to(device)
        self.target_rows = PointwiseRows(rows.target, self.supervision, self.batch_size, self.generator,
                                         self.num_negatives, "target")
        if self.pairing == "same_row":
            self.source_rows = PointwiseRows(rows.source, self.supervision, self.batch_size, self.generator,
                                             self.num_negatives, "source")
        else:
            self.partners = SourcePartners(rows.source, self.supervision, data.num_users, self.generator)
        self._grid_cache: Optional[dict] = None

    # ------------------------------------------------------------------ training
    def regulariser(self) -> Tensor:
        weights = [h.weight for h in self.model.towers.cross]
        if self.reg == "cross_frobenius":
            return sum(torch.linalg.vector_norm(w) for w in weights)
        return sum(w.pow(2).sum() for w in weights) / 2

    def same_row_losses(self, target: tuple, source: tuple) -> tuple[Tensor, Tensor]:
        """Code ``d339918``: each domain's rows through both towers, loss on its own tower."""
        net = self.model
        users, items, labels = target
        stacked = net.target_items(items)
        _, logit_t = net.towers(net.inputs("source", users, stacked), net.inputs("target", users, stacked), self.overlap[users])
        users, items, labels_s = source
        logit_s, _ = net.towers(net.inputs("source", users, items), net.inputs("target", users, items), self.overlap[users])
        return (F.binary_cross_entropy_with_logits(logit_s, labels_s),
                F.binary_cross_entropy_with_logits(logit_t, labels))

    def same_user_losses(self, target: tuple, partner: tuple) -> tuple[Tensor, Tensor]:
        """Paper: a target row and a source row of the same overlapping user, one forward."""
        net = self.model
        users, items, labels = target
        source_items, source_labels, has = partner
        cross = has & self.overlap[users]
        logit_s, logit_t = net.towers(net.inputs("source", users, source_items),
                                      net.inputs("target", users, net.target_items(items)), cross)
        loss_t = F.binary_cross_entropy_with_logits(logit_t, labels)
        if not bool(has.any()):
            return logit_s.sum() * 0.0, loss_t
        return F.binary_cross_entropy_with_logits(logit_s[has], source_labels[has]), loss_t

    def epoch_batches(self):
        if self.pairing == "same_row":
            return super().epoch_batches()

        def with_partners():
            for users, items, labels in self.target_rows.batches():
                yield (users, items, labels), self.partners.draw(users, labels)

        return with_partners(), self.target_rows.num_batches()

    def step_losses(self, first, second) -> tuple[Tensor, Tensor, Tensor]:
        losses = self.same_row_losses if self.pairing == "same_row" else self.same_user_losses
        loss_s, loss_t = losses(first, second)
        return loss_s + loss_t + self.reg_weight * self.regulariser(), loss_s, loss_t

    # ------------------------------------------------------------------ scoring
    def prepare_scoring(self) -> None:
        net = self.model
        items = net.target_items(torch.arange(self.data.num_items(self.data.target_domain), device=self.device))
        self._grid_cache = {"item_t": net.item_t(items), "item_s": net.item_s(items)}

    def clear_scoring(self) -> None:
        self._grid_cache = None

    def score_users(self, users: Tensor) -> Tensor:
        net, cache = self.model, self._grid_cache
        users = users.to(self.device)
        num_items = cache["item_t"].shape[0]
        width = self.mlp_hidden[0] * (2 if self.eval_cross == "same_row" else 1)
        step = max(1, GRID_BYTES // (4 * num_items * width))
        out = []
        for chunk in users.split(step):
            if self.eval_cross == "none":
                out.append(net.towers.target_grid(net.user_t(chunk), cache["item_t"]))
            else:
                out.append(net.towers.target_grid(net.user_t(chunk), cache["item_t"], net.user_s(chunk),
                                                  cache["item_s"], self.overlap[chunk]))
        return torch.cat(out)

    def target_logits(self, users: Tensor, items: Tensor) -> Tensor:
        """Row-wise target logits under the scoring rule (N4)."""
        net = self.model
        users, items = users.to(self.device), net.target_items(items.to(self.device))
        x_t = net.inputs("target", users, items)
        if self.eval_cross == "none":
            return net.towers.target_alone(x_t)
        return net.towers(net.inputs("source", users, items), x_t, self.overlap[users])[1]

    def predict_ctr(self, users: Tensor, items: Tensor) -> Tensor:
        return torch.sigmoid(self.target_logits(users, items))

"""Single-domain baselines: popularity and collaborative filtering over a backbone encoder.

Both train on the domains of the data they are given: the target alone, or (``data.use_source``)
the source domains and the target merged into one graph with shared users and stacked item
spaces, the way the BiGNAS paper trains its single-domain baselines. They are always evaluated on
the target items only.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cdrbench.data.dataset import CrossDomainData
from cdrbench.errors import ConfigError
from cdrbench.methods.base import DotProductScoring, Method, Phase, Progress
from cdrbench.models.losses import bpr_loss, embedding_l2
from cdrbench.train.optim import supports_sparse_gradients
from cdrbench.train.sampling import NegativeSampler, bpr_triples

LOSSES = ("bpr", "bce")
POP_COUNTS = ("interactions", "recbole_batches")


def recbole_batch_counts(users: Tensor, items: Tensor, num_items: int, batch_size: int, num_negatives: int,
                         sampler: NegativeSampler, generator: torch.Generator) -> Tensor:
    """Item counts as RecBole's ``Pop.calculate_loss`` accumulates them over one training epoch.

    RecBole's pointwise training loader takes ``batch_size // (1 + num_negatives)`` shuffled
    rows per batch and appends ``num_negatives`` sampled negatives per row; ``Pop`` then runs
    ``item_cnt[item, :] = item_cnt[item, :] + 1`` on the batch's item column. With repeated
    indices an indexed assignment writes the same value once, so each item gains at most 1 per
    batch, negatives included. ``TraditionalTrainer`` trains such models for exactly one epoch.
    """
    counts = torch.zeros(num_items, dtype=torch.long)
    rows_per_batch = max(batch_size // (1 + num_negatives), 1)
    order = torch.randperm(len(users), generator=generator)
    for batch in order.split(rows_per_batch):
        u, i = users[batch], items[batch]
        column = [i] + [sampler.sample(u, i) for _ in range(num_negatives)]
        present = torch.unique(torch.cat(column))
        counts[present] += 1
    return counts


class Popularity(Method):
    """Most-popular ranking: an item's score is its count in the target domain's training rows.
    For CTR its click probability is the item's smoothed training click rate,
    ``(clicks + m * global_rate) / (shows + m)`` with ``m = smoothing`` pseudo-rows at the global
    rate (so an unseen item gets the global rate). No phases.

    ``count`` says what is counted (top-N only):

    * ``interactions`` (default): the item's number of training rows;
    * ``recbole_batches``: RecBole's ``Pop`` as trained by RecBole (1.x) — one epoch of shuffled
      pointwise batches, each of ``batch_size // (1 + num_negatives)`` training rows plus
      ``num_negatives`` uniform negatives per row (not the user's training items), and an item
      scores 1 for every *batch* whose item column holds it (``item_cnt[item] += 1`` is an indexed
      assignment, so an item occurring several times in a batch counts once; the sampled
      negatives count like positives). Reproduces that reference's figures; see
      :func:`recbole_batch_counts`.
    """

    tasks = frozenset({"topn", "ctr"})

    def __init__(self, smoothing: float = 1.0, count: str = "interactions", batch_size: int = 2048,
                 num_negatives: int = 1):
        super().__init__()
        if smoothing < 0:
            raise ConfigError(f"method.smoothing must be >= 0, got {smoothing}")
        if count not in POP_COUNTS:
            raise ConfigError(f"method.count={count!r} is not one of {list(POP_COUNTS)}")
        if batch_size < 1 + num_negatives or num_negatives < 0:
            raise ConfigError("method.batch_size must be >= 1 + method.num_negatives, and method.num_negatives >= 0")
        self.smoothing = smoothing
        self.count = count
        self.batch_size = batch_size
        self.num_negatives = num_negatives
        self.counts: Optional[Tensor] = None
        self.click_rate: Optional[Tensor] = None

    def setup(self, data: CrossDomainData, device: torch.device, seed: int) -> None:
        self.data, self.device = data, device
        target = data.target_domain
        train = data.train(target)
        n_items = data.num_items(target)
        if self.count == "interactions":
            counts = torch.bincount(train.item, minlength=n_items)
        else:
            generator = torch.Generator().manual_seed(seed)
            sampler = NegativeSampler.single_domain(train.user, train.item, n_items, generator)
            counts = recbole_batch_counts(train.user, train.item, n_items, self.batch_size, self.num_negatives,
                                          sampler, generator)
        self.counts = counts.float().to(device)
        if train.y is not None:
            clicks = torch.bincount(train.item, weights=train.y.double(), minlength=n_items)
            shows = torch.bincount(train.item, minlength=n_items).double()
            rate = float(train.y.double().mean())
            self.click_rate = ((clicks + self.smoothing * rate) / (shows + self.smoothing)).float().to(device)

    def phases(self) -> list[Phase]:
        return []

    def train_epoch(self, phase, epoch, progress):  # pragma: no cover - no phases
        return {}

    def score_users(self, users: Tensor) -> Tensor:
        return self.counts.unsqueeze(0).expand(len(users), -1)

    def predict_ctr(self, users: Tensor, items: Tensor) -> Tensor:
        if self.click_rate is None:
            raise ConfigError("pop cannot predict clicks: the data has no click labels")
        return self.click_rate[items]

    def modules(self) -> list[torch.nn.Module]:
        return []

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class CollaborativeFiltering(DotProductScoring, Method):
    r"""BPR-MF, LightGCN and NGCF: an encoder from ``cdrbench.models`` plus a training objective.

    * ``loss=bpr`` (top-N): :math:`-\ln\sigma(\hat y_{ui} - \hat y_{uj})` with one uniform negative
      :math:`j` per positive (from the positive's domain, not a training item of the user), plus
      ``reg_weight`` :math:`\cdot \tfrac12(\|e_u^{(0)}\|^2+\|e_i^{(0)}\|^2+\|e_j^{(0)}\|^2)` per row
      (RecBole's ``EmbLoss``). On click-labelled data the positives are the ``y = 1`` rows.
    * ``loss=bce`` (CTR): binary cross-entropy of :math:`\sigma(\hat y_{ui})` against the click
      label of every labelled training row (no sampled negatives), plus the same L2 term.

    :math:`\hat y_{ui} = e_u^\top e_i`. The graph holds every training row of the domains used
    (labels ignored); the encoder propagates over it once per batch.

    Args:
        encoder: ``encoder(num_users=, num_items=)`` builds the backbone (a ``_partial_``).
        optimizer: ``optimizer(params)`` builds the optimiser (a ``_partial_``).
        loss: ``bpr`` | ``bce``.
        batch_size: training rows per step.
        reg_weight: L2 weight on the batch's layer-0 embeddings.
        num_negatives: BPR negatives per positive.
        name: label only.
    """

    tasks = frozenset({"topn", "ctr"})

    def __init__(
        self,
        encoder: Callable[..., torch.nn.Module],
        optimizer: Callable[..., torch.optim.Optimizer],
        loss: str = "bpr",
        batch_size: int = 2048,
        reg_weight: float = 0.0,
        num_negatives: int = 1,
    ):
        super().__init__()
        if loss not in LOSSES:
            raise ConfigError(f"method.loss={loss!r} is not one of {list(LOSSES)}")
        if batch_size < 1 or num_negatives < 1:
            raise ConfigError("method.batch_size and method.num_negatives must be >= 1")
        self.encoder_factory = encoder
        self.optimizer_factory = optimizer
        self.loss = loss
        self.batch_size = batch_size
        self.reg_weight = reg_weight
        self.num_negatives = num_negatives

    # ------------------------------------------------------------------ setup
    def setup(self, data: CrossDomainData, device: torch.device, seed: int) -> None:
        self.data, self.device = data, device
        graph, offsets = data.unified_graph()
        self.graph = graph.to(device)
        self.target_slice = slice(offsets[data.target_domain], offsets[data.target_domain] + data.num_items(data.target_domain))
        users, items, labels, domain_ids = [], [], [], []
        for index, domain in enumerate(data.domains):
            rows = data.train(domain)
            if self.loss == "bce" and rows.y is None:
                raise ConfigError(f"method.loss=bce needs click labels, but domain '{domain}' has none (data.label_threshold)")
            if self.loss == "bpr" and rows.y is not None:
                rows = rows.select(rows.y > 0.5)
            users.append(rows.user)
            items.append(rows.item + offsets[domain])
            labels.append(rows.y if rows.y is not None else torch.ones(len(rows)))
            domain_ids.append(torch.full((data.num_items(domain),), index, dtype=torch.long))
        self.train_users = torch.cat(users)
        self.train_items = torch.cat(items)
        self.train_labels = torch.cat(labels)
        num_items = sum(data.num_items(d) for d in data.domains)
        self.encoder = self.encoder_factory(num_users=data.num_users, num_items=num_items).to(device)
        self.optimizer = self.optimizer_factory(params=self.encoder.parameters())
        if getattr(self.encoder, "sparse", False) and not supports_sparse_gradients(self.optimizer):
            raise ConfigError(
                f"backbone.sparse=true gives sparse gradients, which {type(self.optimizer).__name__} does not accept: "
                "use optimizer=sparse_adam"
            )
        self.generator = torch.Generator().manual_seed(seed)
        ranges = torch.tensor([[offsets[d], offsets[d] + data.num_items(d)] for d in data.domains])
        all_train = [data.train(d) for d in data.domains]
        self.sampler = NegativeSampler(
            torch.cat([r.user for r in all_train]),
            torch.cat([r.item + offsets[d] for r, d in zip(all_train, data.domains)]),
            num_items,
            torch.cat(domain_ids),
            ranges,
            self.generator,
        )

    # ------------------------------------------------------------------ training
    def train_epoch(self, phase: Phase, epoch: int, progress: Progress) -> dict[str, float]:
        self.encoder.train()
        order = torch.randperm(len(self.train_users), generator=self.generator)
        num_batches = -(-len(order) // self.batch_size)
        total, count = 0.0, 0
        if self.loss == "bpr":
            batches = bpr_triples(self.train_users, self.train_items, self.sampler, self.batch_size,
                                  self.generator, self.num_negatives, order=order)
        else:
            batches = ((self.train_users[b], self.train_items[b], self.train_labels[b]) for b in order.split(self.batch_size))
        for users, items, third in progress(batches, total=num_batches, desc=f"epoch {epoch}"):
            users, items, third = users.to(self.device), items.to(self.device), third.to(self.device)
            loss = self._bpr_loss(users, items, third) if self.loss == "bpr" else self._bce_loss(users, items, third)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            rows = len(users) // (self.num_negatives if self.loss == "bpr" else 1)
            total += float(loss.detach()) * rows
            count += rows
        return {"loss": total / max(1, count)}

    def _bpr_loss(self, users: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        u, i, j = self.encoder.batch_embeddings(self.graph, users, pos, neg)
        loss = bpr_loss((u * i).sum(-1), (u * j).sum(-1))
        if self.reg_weight:
            eu, ei = self.encoder.ego_embeddings(users, pos)
            _, ej = self.encoder.ego_embeddings(users, neg)
            loss = loss + self.reg_weight * embedding_l2(eu, ei, ej)
        return loss

    def _bce_loss(self, users: Tensor, items: Tensor, labels: Tensor) -> Tensor:
        u, i = self.encoder.batch_embeddings(self.graph, users, items)
        logits = (u * i).sum(-1)
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        if self.reg_weight:
            loss = loss + self.reg_weight * embedding_l2(*self.encoder.ego_embeddings(users, items))
        return loss

    # ------------------------------------------------------------------ scoring
    def scoring_embeddings(self) -> tuple[Tensor, Tensor]:
        user_emb, item_emb = self.encoder(self.graph)
        return user_emb, item_emb[self.target_slice]

    # ------------------------------------------------------------------ state
    def modules(self) -> list[torch.nn.Module]:
        return [self.encoder]

    def state_dict(self) -> dict:
        return {
            "encoder": self.encoder.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.encoder.load_state_dict(state["encoder"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])

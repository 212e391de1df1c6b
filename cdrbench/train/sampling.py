"""Samplers shared by the methods: uniform negatives, one epoch of BPR triples, one epoch of
pointwise (label 1 / sampled label 0) rows.

Every BPR-trained method (the single-domain baselines, HAGO's prompt tuning, PCRec's fine-tuning,
the cross-domain baselines) draws its negatives here, from its own seeded ``torch.Generator``,
so resume restores the draws exactly.
"""

from __future__ import annotations

from typing import Iterator, Optional

import torch
from torch import Tensor


class NegativeSampler:
    """Uniform negatives from the positive's own domain, excluding the user's training items.

    Item ids are in the stacked item space; ``domain_ranges[d] = (start, stop)``. A candidate that
    is a known positive is redrawn (up to ``max_tries`` rounds; then it is kept). For one domain,
    :meth:`single_domain` builds the sampler from ``(users, items, num_items)`` alone."""

    def __init__(self, users: Tensor, items: Tensor, num_items: int, domain_of_item: Tensor,
                 domain_ranges: Tensor, generator: torch.Generator, max_tries: int = 10):
        self.num_items = num_items
        self.known = torch.unique(users.long() * num_items + items.long())
        self.domain_of_item = domain_of_item
        self.domain_ranges = domain_ranges
        self.generator = generator
        self.max_tries = max_tries

    @classmethod
    def single_domain(cls, users: Tensor, items: Tensor, num_items: int, generator: torch.Generator,
                      max_tries: int = 10) -> "NegativeSampler":
        return cls(users, items, num_items, torch.zeros(num_items, dtype=torch.long),
                   torch.tensor([[0, num_items]]), generator, max_tries)

    def sample(self, users: Tensor, pos_items: Tensor) -> Tensor:
        ranges = self.domain_ranges[self.domain_of_item[pos_items]]
        start, width = ranges[:, 0], ranges[:, 1] - ranges[:, 0]
        neg = start + (torch.rand(len(users), generator=self.generator) * width).long()
        for _ in range(self.max_tries):
            keys = users * self.num_items + neg
            pos = torch.searchsorted(self.known, keys).clamp(max=len(self.known) - 1)
            clash = self.known[pos] == keys
            if not clash.any():
                break
            redraw = start[clash] + (torch.rand(int(clash.sum()), generator=self.generator) * width[clash]).long()
            neg[clash] = redraw
        return neg


def bpr_triples(users: Tensor, items: Tensor, sampler: NegativeSampler, batch_size: int,
                generator: torch.Generator, num_negatives: int = 1,
                order: Optional[Tensor] = None) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """One epoch of ``(users, positives, negatives)`` batches: the training pairs in a random order
    (``order`` to pass one), ``batch_size`` pairs per batch, each repeated ``num_negatives`` times
    with its own uniform negative. Batches are drawn lazily, so the sampler's generator advances
    batch by batch (as a loop that samples inside it would)."""
    if order is None:
        order = torch.randperm(len(users), generator=generator)
    for batch in order.split(batch_size):
        u = users[batch].repeat(num_negatives)
        i = items[batch].repeat(num_negatives)
        yield u, i, sampler.sample(u, i)


def pointwise_batches(users: Tensor, items: Tensor, sampler: NegativeSampler, batch_size: int,
                      generator: torch.Generator, num_negatives: int = 1,
                      order: Optional[Tensor] = None) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """One epoch of ``(users, items, labels)`` batches for pointwise (BCE/MSE) training on implicit
    positives, as RecBole's ``TrainDataLoader`` builds them with ``neg_sampling: {uniform: N}``:
    a batch holds ``batch_size`` rows in all, ``batch_size // (1 + N)`` positives (label 1) followed
    by ``N`` uniform negatives of each positive's user (label 0). ``order`` (default: a random
    permutation) says which positives come in which batch; it may repeat positions, e.g. to cycle
    a shorter domain alongside a longer one. Batches are drawn lazily (the generator advances
    batch by batch)."""
    if order is None:
        order = torch.randperm(len(users), generator=generator)
    positives_per_batch = max(batch_size // (1 + num_negatives), 1)
    for batch in order.split(positives_per_batch):
        u, i = users[batch], items[batch]
        neg_users = u.repeat(num_negatives)
        neg_items = sampler.sample(neg_users, i.repeat(num_negatives))
        labels = torch.cat([torch.ones(len(u)), torch.zeros(len(neg_users))])
        yield torch.cat([u, neg_users]), torch.cat([i, neg_items]), labels

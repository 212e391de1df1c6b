"""Featurised subgraph views, drawn ahead of the encoder in DataLoader workers.

A batch is ``(stream, epoch, index, seeds)``; the worker that gets it walks
(:class:`~cdrbench.methods.pcrec.sampling.RWRSampler`), induces the subgraphs and computes their
features (:func:`~cdrbench.methods.pcrec.features.featurize`) with the batch's own generator
(:func:`~cdrbench.methods.pcrec.sampling.batch_generator`), so the result depends on the batch
alone: not on the worker, the number of workers, or a resume in between.
"""

from __future__ import annotations

import multiprocessing as mp
from typing import Iterator, Sequence

import torch
from torch import Tensor

from cdrbench.methods.pcrec.features import GraphBatch, featurize
from cdrbench.methods.pcrec.sampling import RWRSampler, batch_generator

#: one batch request: (stream, epoch, batch index, seed nodes)
Request = tuple[str, int, int, Tensor]


class SubgraphViews(torch.utils.data.Dataset):
    """``dataset[(stream, epoch, index, seeds)]`` -> ``num_views`` :class:`GraphBatch` es."""

    def __init__(self, sampler: RWRSampler, run_seed: int, num_views: int = 2, pos_dim: int = 32,
                 random_sign: bool = True):
        self.sampler, self.run_seed, self.num_views = sampler, run_seed, num_views
        self.pos_dim, self.random_sign = pos_dim, random_sign

    def __len__(self) -> int:  # requests come from the loader's sampler, not from indices
        raise TypeError("SubgraphViews is indexed by batch requests")

    def __getitem__(self, request: Request) -> list[GraphBatch]:
        stream, epoch, index, seeds = request
        generator = batch_generator(self.run_seed, stream, epoch, index)
        views = self.sampler.sample(seeds, self.num_views, generator)
        return [featurize(v, self.pos_dim, generator if self.random_sign else None) for v in views]


def _identity(batch):
    return batch


def view_batches(dataset: SubgraphViews, requests: Sequence[Request], num_workers: int = 0,
                 prefetch: int = 4) -> Iterator[list[GraphBatch]]:
    """The requested batches in order; ``num_workers > 0`` draws them in worker processes,
    ``prefetch`` batches ahead per worker."""
    if num_workers <= 0:
        return (dataset[r] for r in requests)
    # an own generator: the loader's worker seed must not be drawn from the global RNG (that
    # would shift the dropout masks of the training step relative to num_workers=0); fork where
    # the platform has it: a spawned worker re-imports torch (seconds) at every epoch
    context = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, sampler=list(requests), num_workers=num_workers,
        prefetch_factor=max(1, prefetch), collate_fn=_identity, generator=torch.Generator().manual_seed(0),
        multiprocessing_context=context,
    )
    return iter(loader)


def requests_for(stream: str, epoch: int, seeds: Tensor, batch_size: int) -> list[Request]:
    return [(stream, epoch, i, chunk) for i, chunk in enumerate(seeds.split(batch_size))]


"""Pop's two counting rules on hand-made rows (method.count=interactions|recbole_batches)."""

from __future__ import annotations

import pytest
import torch

from cdrbench.errors import ConfigError
from cdrbench.methods.baselines import Popularity, recbole_batch_counts
from cdrbench.train.sampling import NegativeSampler

# two users, both with training items {0, 1}; item 2 is nobody's, so it is every negative
USERS = torch.tensor([0, 0, 1, 1])
ITEMS = torch.tensor([0, 1, 0, 1])


def counts(batch_size: int, num_negatives: int, seed: int = 0) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    sampler = NegativeSampler.single_domain(USERS, ITEMS, 3, generator)
    return recbole_batch_counts(USERS, ITEMS, 3, batch_size, num_negatives, sampler, generator).tolist()


def test_one_batch_counts_each_item_once_negatives_included():
    # batch_size 8 = 4 rows + 4 negatives: items 0 and 1 occur twice, item 2 four times -> 1 each
    assert counts(8, 1) == [1, 1, 1]


def test_an_item_scores_one_per_batch_that_holds_it():
    # batch_size 4 = 2 rows + 2 negatives (both item 2): two batches, so item 2 counts 2 although
    # it occurs 4 times; items 0 and 1 count 1 per batch they land in (2 rows per batch of 4)
    for seed in range(5):
        c = counts(4, 1, seed)
        assert c[2] == 2
        assert c[0] in (1, 2) and c[1] in (1, 2) and c[0] + c[1] in (2, 4)


def test_without_negatives_and_one_batch_an_item_counts_whether_it_occurs():
    assert counts(100, 0) == [1, 1, 0]


def test_interactions_count_every_row(tmp_path):
    from cdrbench.data.benchmark_graphs import clustered_cross_domain

    data = clustered_cross_domain(40, {"tgt": (30, 200)}, "tgt")
    pop = Popularity(count="interactions")
    pop.setup(data, torch.device("cpu"), seed=0)
    train = data.train("tgt")
    assert pop.score_users(torch.tensor([0]))[0].tolist() == torch.bincount(train.item, minlength=30).float().tolist()
    batches = Popularity(count="recbole_batches", batch_size=64)
    batches.setup(data, torch.device("cpu"), seed=0)
    scores = batches.score_users(torch.tensor([0]))[0]
    assert scores.max() <= -(-len(train) // 32)  # at most one per batch of 32 rows


@pytest.mark.parametrize("kwargs, key", [({"count": "batches"}, "method.count"),
                                         ({"batch_size": 1, "num_negatives": 1}, "method.batch_size")])
def test_bad_options_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        Popularity(**kwargs)

"""Sampled-negative evaluation: what the negatives may contain, that they are shared by every
method and run, and the metrics of a hand-computed case."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch

from cdrbench.data.dataset import CrossDomainData, Interactions
from cdrbench.errors import ConfigError
from cdrbench.eval import sampled
from cdrbench.eval.evaluator import Evaluator
from cdrbench.eval.sampled import SampledCandidates, draw_negatives, evaluate_sampled, sampled_candidates


def random_data(num_users=40, num_items=60, rows_per_user=12, seed=0) -> CrossDomainData:
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(num_users), rows_per_user)
    items = np.concatenate([rng.choice(num_items, rows_per_user, replace=False) for _ in range(num_users)])
    split = np.tile([0] * (rows_per_user - 2) + [1, 2], num_users)
    rows = Interactions(
        user=torch.as_tensor(users), item=torch.as_tensor(items), rating=torch.full((users.size,), float("nan")),
        ts=torch.zeros(users.size, dtype=torch.float64), split=torch.as_tensor(split, dtype=torch.int8),
    )
    return CrossDomainData("rand", [], "t", np.array([f"u{u}" for u in range(num_users)], dtype=object),
                           {"t": np.array([f"i{i}" for i in range(num_items)], dtype=object)}, {"t": rows})


class Scores:
    """A stub method with fixed random scores (ties included: scores are rounded)."""

    def __init__(self, num_users, num_items, seed):
        self.table = torch.round(torch.rand(num_users, num_items, generator=torch.Generator().manual_seed(seed)) * 8)
        self.calls = 0

    @contextlib.contextmanager
    def evaluation(self):
        yield

    def score_users(self, users):
        self.calls += 1
        return self.table[users]


def test_negatives_avoid_every_interaction_of_the_user_and_are_distinct():
    data = random_data()
    rows = data.rows("t")
    seen = {(u, i) for u, i in zip(rows.user.tolist(), rows.item.tolist())}
    for split in ("valid", "test"):
        cands = sampled_candidates(data, split, 30, seed=5, log=lambda _: None)
        assert cands.negatives.shape == (40, 30)
        for u, negs in zip(cands.user, cands.negatives):
            assert len(set(negs.tolist())) == 30  # without replacement
            assert not {(int(u), int(j)) for j in negs} & seen  # never a train/valid/test item
    # users with almost no free item are drawn exactly from what is left
    exact = draw_negatives(np.array([0]), np.zeros(55, np.int64), np.arange(55), 60, 5, seed=1)
    assert sorted(exact[0].tolist()) == [55, 56, 57, 58, 59]
    with pytest.raises(ConfigError, match="eval.negatives=6"):
        draw_negatives(np.array([0]), np.zeros(55, np.int64), np.arange(55), 60, 6, seed=1)


def test_negatives_are_seeded_saved_and_shared_by_every_method_and_run(tmp_path, monkeypatch):
    data = random_data()
    data.path = tmp_path  # prepared data living on disk
    first = Evaluator(data, tasks=["topn"], ks=[5, 10], negatives=20, negatives_seed=3, log=lambda _: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["negatives_test_n20_seed3.npz", "negatives_valid_n20_seed3.npz"]

    def no_second_draw(*args, **kwargs):
        raise AssertionError("negatives were drawn again instead of read back")

    monkeypatch.setattr(sampled, "draw_negatives", no_second_draw)
    second = Evaluator(data, tasks=["topn"], ks=[5, 10], negatives=20, negatives_seed=3, log=lambda _: None)
    for split in ("valid", "test"):
        np.testing.assert_array_equal(first._sampled[split].negatives, second._sampled[split].negatives)
    monkeypatch.undo()
    # two methods are ranked on the same candidates: each case's rank depends only on its own scores
    a, b = Scores(40, 60, seed=1), Scores(40, 60, seed=2)
    result_a, result_b = first.evaluate(a, "test", keep_rows=True), second.evaluate(b, "test", keep_rows=True)
    cands = first._sampled["test"]
    for scores, result in ((a.table, result_a), (b.table, result_b)):
        pos = scores[cands.user, cands.item]
        neg = scores[torch.as_tensor(cands.user)[:, None], torch.as_tensor(cands.negatives)]
        lower_id = torch.as_tensor(cands.negatives) < torch.as_tensor(cands.item)[:, None]
        expected = ((neg > pos[:, None]) | ((neg == pos[:, None]) & lower_id)).sum(1) + 1
        assert result.per_user["rank"].tolist() == expected.tolist()
    other_seed = sampled_candidates(data, "test", 20, seed=4, log=lambda _: None)
    assert not np.array_equal(other_seed.negatives, cands.negatives)


def test_metrics_of_a_hand_computed_case_and_chunk_invariance():
    # user 0: positive item 2 (score .5), negatives 0 (.5, lower id: ranked first), 5 (.9), 7 (.1) -> rank 3
    # user 1: positive item 4 (.8), negatives 1 (.2), 3 (.8, lower id first), 6 (.3) -> rank 2
    table = torch.tensor([[0.5, 0, 0.5, 0, 0, 0.9, 0, 0.1], [0, 0.2, 0, 0.8, 0.8, 0, 0.3, 0]])
    cands = SampledCandidates(np.array([0, 1]), np.array([2, 4]), np.array([[0, 5, 7], [1, 3, 6]]))
    results = [evaluate_sampled(lambda u: table[u], cands, 8, [1, 2, 3], chunk_size=c) for c in (1, None)]
    for result in results:
        assert result.per_user["rank"].tolist() == [3, 2]
        assert result.means["hr@1"] == 0.0 and result.means["hr@2"] == 0.5 and result.means["hr@3"] == 1.0
        assert result.means["ndcg@3"] == pytest.approx((1 / math.log2(4) + 1 / math.log2(3)) / 2)
        assert result.means["mrr@3"] == pytest.approx((1 / 3 + 1 / 2) / 2)
        assert result.means["recall@2"] == result.means["hr@2"]  # one positive per case
    assert results[0].means == results[1].means

"""The evaluator wires split rows, masking and labels correctly (spec evaluation.md E4)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from cdrbench.data.dataset import CrossDomainData, Interactions
from cdrbench.eval.evaluator import Evaluator, monitor_value
from cdrbench.errors import ConfigError

E4_SCORES = torch.tensor([0.10, 0.92, 0.35, 0.80, 0.55, 0.61, 0.92, 0.05, 0.70, 0.40])


def e4_data(with_labels: bool) -> CrossDomainData:
    # user 0: train {3}, valid {8}, test {2, 5, 6}; user 1: train {0}, valid {9} with label 0
    users = [0, 0, 0, 0, 0, 1, 1]
    items = [3, 8, 2, 5, 6, 0, 9]
    split = [0, 1, 2, 2, 2, 0, 1]
    y = [1, 1, 1, 1, 1, 1, 0]
    rows = Interactions(
        user=torch.tensor(users), item=torch.tensor(items), rating=torch.full((7,), float("nan")),
        ts=torch.zeros(7, dtype=torch.float64), split=torch.tensor(split, dtype=torch.int8),
        y=torch.tensor(y, dtype=torch.float32) if with_labels else None,
    )
    return CrossDomainData("e4", [], "t", np.array(["a", "b"], dtype=object),
                           {"t": np.array([str(i) for i in range(10)], dtype=object)}, {"t": rows})


class FixedScores:
    """A stub method: every user gets the E4 scores; CTR probability = the item's score."""

    @contextlib.contextmanager
    def evaluation(self):
        yield

    def score_users(self, users):
        return E4_SCORES.expand(len(users), -1).clone()

    def predict_ctr(self, users, items):
        return E4_SCORES[items]


@pytest.mark.parametrize("chunk_size", [1, None])
def test_e4_through_the_evaluator(chunk_size):
    evaluator = Evaluator(e4_data(with_labels=False), tasks=["topn"], ks=[2, 5], chunk_size=chunk_size)
    test = evaluator.evaluate(FixedScores(), "test", keep_rows=True)
    assert test.metrics["topn_users"] == 1  # user 1 has no test item
    assert test.metrics["recall@5"] == pytest.approx(0.6667, abs=1e-4)
    assert test.metrics["ndcg@5"] == pytest.approx(0.5307, abs=1e-4)
    assert test.metrics["mrr@2"] == pytest.approx(0.5)  # tie between items 1 and 6: 1 first
    assert test.per_user["n_masked"].tolist() == [2]  # train {3} + valid {8}
    assert test.per_user["user_raw"].tolist() == ["a"]
    valid = evaluator.evaluate(FixedScores(), "valid")
    # user 0: mask {3}, R = {8} -> rank 3; user 1: mask {0}, R = {9} -> rank 7 (scores .92 .92 .80 .70 .61 .55 .40)
    assert valid.metrics["topn_users"] == 2
    assert valid.metrics["mrr@5"] == pytest.approx((1 / 3 + 0) / 2)
    assert valid.metrics["recall@2"] == 0.0


def test_labelled_data_ranks_only_clicked_items_and_scores_every_row():
    evaluator = Evaluator(e4_data(with_labels=True), tasks=["topn", "ctr"], ks=[5])
    valid = evaluator.evaluate(FixedScores(), "valid", keep_rows=True)
    assert valid.metrics["topn_users"] == 1  # user 1's valid item has y = 0: not a positive
    # CTR rows: (0, 8, y=1, p=.70) and (1, 9, y=0, p=.40) -> AUC 1
    assert valid.metrics["auc"] == 1.0
    assert valid.metrics["logloss"] == pytest.approx(-(np.log(0.70) + np.log(0.60)) / 2)
    assert valid.predictions["y"].tolist() == [1, 0]


def test_single_class_auc_is_undefined_not_one():
    evaluator = Evaluator(e4_data(with_labels=True), tasks=["ctr"])
    test = evaluator.evaluate(FixedScores(), "test")  # all test rows are clicks
    assert test.metrics["auc"] is None
    assert "auc_undefined_reason" in test.notes
    with pytest.raises(ConfigError, match="undefined"):
        monitor_value(test.metrics, "auc")


def test_ctr_needs_labels_and_monitor_must_exist():
    with pytest.raises(ConfigError, match="label_threshold"):
        Evaluator(e4_data(with_labels=False), tasks=["ctr"])
    with pytest.raises(ConfigError, match="eval.tasks"):
        Evaluator(e4_data(with_labels=False), tasks=["rank"])
    with pytest.raises(ConfigError, match="trainer.monitor"):
        monitor_value({"ndcg@20": 0.1}, "ndcg@10")
    assert monitor_value({"logloss": 0.4}, "logloss") == -0.4

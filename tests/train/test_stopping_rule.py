"""``trainer.stopping_rule``: the strict rule (a tie keeps the earlier best, stop after
``patience`` bad evaluations) and RecBole's ``early_stopping`` (a value >= the best improves,
stop after more than ``patience``), on a scripted validation curve."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from cdrbench.errors import ConfigError
from cdrbench.methods.base import Method, Phase
from cdrbench.train.trainer import Trainer

CURVE = [0.1, 0.2, 0.2, 0.15, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1]


class _Scripted(Method):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(1, 1)
        self.epoch = -1

    def setup(self, data, device, seed):
        pass

    def phases(self):
        return [Phase("train", max_epochs=len(CURVE))]

    def train_epoch(self, phase, epoch, progress):
        self.epoch = epoch
        return {}

    def modules(self):
        return [self.w]

    def state_dict(self):
        return {"epoch": self.epoch}

    def load_state_dict(self, state):
        self.epoch = state["epoch"]


class _Evaluator:
    def evaluate(self, method, split):
        return SimpleNamespace(metrics={"ndcg@10": CURVE[method.epoch]}, seconds=0.0, notes={})


def fit(run_dir, rule: str, patience: int = 2):
    trainer = Trainer(_Scripted(), _Evaluator(), run_dir=run_dir, max_epochs=10, patience=patience, monitor="ndcg@10",
                      save_last=False, log=lambda _: None, stopping_rule=rule)
    trainer._save_best = lambda name: None  # no files
    return trainer.fit()


def test_strict_rule_keeps_the_first_of_tied_bests_and_stops_after_patience(tmp_path):
    state = fit(tmp_path, "strict")
    assert state.best_epoch == 1 and len(state.history) == 4 and state.stopped_early  # epochs 2, 3 are bad


def test_recbole_rule_moves_the_best_on_a_tie_and_stops_after_more_than_patience(tmp_path):
    state = fit(tmp_path, "recbole")
    assert state.best_epoch == 4  # the ties at epochs 2 and 4 count as improvements
    assert len(state.history) == 8 and state.stopped_early  # epochs 5, 6, 7 bad: 3 > patience 2


def test_unknown_rule_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="trainer.stopping_rule='ties'"):
        fit(tmp_path, "ties")

"""The training loop end to end on small synthetic data: determinism, resume, run record."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from cdrbench.app import run_training
from cdrbench.config import compose
from cdrbench.methods.baselines import CollaborativeFiltering

SMALL = [
    "data=synthetic",
    "data.domains.src.reader.num_users=120",
    "data.domains.tgt.reader.num_users=120",
    "data.domains.src.reader.num_items=80",
    "data.domains.tgt.reader.num_items=60",
    "trainer.progress=false",
    "trainer.max_epochs=4",
    "trainer.patience=10",
    "optimizer.lr=0.01",
    "method.batch_size=256",
]


def train(tmp_path, name, *overrides):
    cfg = compose([*SMALL, f"data.root={tmp_path / 'data'}", f"output_root={tmp_path}", *overrides])
    return run_training(cfg, tmp_path / name)


def test_same_seed_gives_identical_metrics(tmp_path):
    first = train(tmp_path, "a", "seed=3")
    second = train(tmp_path, "b", "seed=3")
    other = train(tmp_path, "c", "seed=4")
    assert first["test"] == second["test"] and first["valid"] == second["valid"]
    assert first["test"] != other["test"]
    history_a = pd.read_csv(tmp_path / "a" / "history.csv")
    history_b = pd.read_csv(tmp_path / "b" / "history.csv")
    pd.testing.assert_series_equal(history_a["loss"], history_b["loss"])


@pytest.mark.parametrize("method", ["lightgcn", "ngcf"])
def test_interrupted_run_resumes_to_the_same_metrics(tmp_path, monkeypatch, method):
    reference = train(tmp_path, "reference", f"method={method}")
    original = CollaborativeFiltering.train_epoch

    def crash_at_epoch_2(self, phase, epoch, progress):
        if epoch == 2:
            raise KeyboardInterrupt("simulated crash")
        return original(self, phase, epoch, progress)

    monkeypatch.setattr(CollaborativeFiltering, "train_epoch", crash_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, "crashed", f"method={method}")
    assert not (tmp_path / "crashed" / "results.json").exists()  # a crash leaves no results
    assert json.loads((tmp_path / "crashed" / "run.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(CollaborativeFiltering, "train_epoch", original)

    resumed = train(tmp_path, "resumed", f"method={method}", "trainer.resume=true")
    assert resumed["resumed_from"] == str(tmp_path / "crashed")
    assert resumed["test"] == reference["test"]
    assert resumed["best_epoch"] == reference["best_epoch"]
    history = pd.read_csv(tmp_path / "resumed" / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2, 3]
    pd.testing.assert_series_equal(history["loss"], pd.read_csv(tmp_path / "reference" / "history.csv")["loss"])


def test_resume_without_unfinished_run_is_an_error(tmp_path):
    from cdrbench.errors import ConfigError

    with pytest.raises(ConfigError, match="no unfinished run"):
        train(tmp_path, "r", "trainer.resume=true")


def test_run_record_contents(tmp_path):
    results = train(tmp_path, "run", "trainer.max_epochs=3", "eval.tasks=[topn,ctr]", "trainer.monitor=ndcg@10")
    run = tmp_path / "run"
    for name in ("results.json", "history.csv", "per_user_valid.parquet", "per_user_test.parquet",
                 "pred_valid.parquet", "pred_test.parquet", "best.pt", "last.pt", "config.yaml"):
        assert (run / name).is_file(), name
    saved = json.loads((run / "results.json").read_text())
    assert saved["test"] == results["test"]
    for key in ("method", "data", "seed", "config_hash", "best_epoch", "valid", "test", "seconds", "memory",
                "device", "versions", "git_sha"):
        assert key in saved
    # per-user rows re-aggregate to the reported means
    per_user = pd.read_parquet(run / "per_user_test.parquet")
    assert per_user["ndcg@10"].mean() == pytest.approx(saved["test"]["ndcg@10"], abs=1e-12)
    assert set(per_user.columns) >= {"user", "user_raw", "n_pos", "n_masked"}
    preds = pd.read_parquet(run / "pred_test.parquet")
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(preds["y"], preds["p"]) == pytest.approx(saved["test"]["auc"])
    # the best checkpoint loads with weights_only=True and reproduces the test metrics' model
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["epoch"] == saved["best_epoch"] and "encoder" in best["method"]
    assert "data:" in best["config_yaml"]


def test_best_epoch_is_the_best_validation_epoch(tmp_path):
    results = train(tmp_path, "run", "trainer.max_epochs=5")
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    col = "valid_ndcg@20"
    best = history[col].max()
    first_best_epoch = int(history.loc[history[col] == best, "epoch"].iloc[0])  # a tie keeps the earlier
    assert results["best_epoch"] == first_best_epoch
    assert results["valid"]["ndcg@20"] == pytest.approx(best)


def test_early_stopping_respects_patience(tmp_path):
    results = train(tmp_path, "run", "trainer.max_epochs=50", "trainer.patience=2", "optimizer.lr=0.5")
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert results["stopped_early"]
    assert len(history) == results["best_epoch"] + 1 + 2


def test_relaimpr_against_a_named_baseline_run(tmp_path):
    base = run_training(compose([*SMALL[:-1], f"data.root={tmp_path / 'data'}", f"output_root={tmp_path}",
                                 "method=pop", "eval.tasks=[ctr]"]), tmp_path / "base")
    ours = train(tmp_path, "ours", "eval.tasks=[ctr]", f"eval.baseline_run={tmp_path / 'base'}")
    auc_m, auc_b = ours["test"]["auc"], base["test"]["auc"]
    ll_m, ll_b = ours["test"]["logloss"], base["test"]["logloss"]
    assert ours["relaimpr"]["relaimpr_auc"] == pytest.approx(((auc_m - 0.5) / (auc_b - 0.5) - 1) * 100)
    assert ours["relaimpr"]["relaimpr_logloss"] == pytest.approx((ll_b / ll_m - 1) * 100)
    assert ours["relaimpr"]["baseline_method"] == "pop"

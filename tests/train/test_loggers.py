"""logger=csv|mlflow|tensorboard: what a tracker holds equals the run record."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cdrbench.app import run_training
from cdrbench.config import compose
from cdrbench.errors import ConfigError

TINY = [
    "method=bprmf", "data=synthetic", "trainer.max_epochs=2", "trainer.progress=false",
    "data.domains.src.reader.num_users=40", "data.domains.tgt.reader.num_users=40",
    "data.domains.src.reader.num_items=30", "data.domains.tgt.reader.num_items=20",
]


def run(tmp_path, *overrides):
    cfg = compose([*TINY, f"data.root={tmp_path / 'data'}", f"output_root={tmp_path}", *overrides])
    return run_training(cfg, tmp_path / "run")


def test_default_logger_is_the_run_record(tmp_path):
    cfg = compose(TINY)
    assert cfg.logger._target_ == "cdrbench.train.loggers.CSVLogger"
    results = run(tmp_path)
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert len(history) == results["epochs_run"] == 2
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "run" / "tensorboard").exists()


def test_mlflow_logs_params_epochs_and_final_metrics(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    results = run(tmp_path, "logger=mlflow", f"logger.tracking_uri={uri}", "logger.experiment=t")
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    (logged,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert logged.info.status == "FINISHED"
    assert logged.data.params["method.name"] == "bprmf" and logged.data.params["seed"] == "0"
    assert logged.data.metrics["final_test_ndcg_at_20"] == pytest.approx(results["test"]["ndcg@20"])
    losses = client.get_metric_history(logged.info.run_id, "loss")
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert [m.value for m in sorted(losses, key=lambda m: m.step)] == pytest.approx(history["loss"].tolist())


def test_tensorboard_writes_the_epoch_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(tmp_path, "logger=tensorboard")
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert [e.value for e in events.Scalars("loss")] == pytest.approx(history["loss"].tolist())


def test_a_logger_that_is_not_a_tracker_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="logger: .* is not a cdrbench.train.loggers.RunLogger"):
        run(tmp_path, "logger._target_=collections.OrderedDict")
    status = json.loads((tmp_path / "run" / "run.json").read_text())
    assert status["status"] == "failed"

"""Experiment trackers of the ``logger=`` group: params, per-epoch metrics and final results.

``csv`` (the default) is the run record itself: ``history.csv`` and ``results.json`` in the run
directory, no extra package. ``mlflow`` and ``tensorboard`` need the ``[track]`` extra
(``pip install -e ".[track]"``); MLflow logs to a local SQLite store by default
(``sqlite:///<output_root>/mlflow.db``; ``logger.tracking_uri`` for a server).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from cdrbench.errors import ConfigError


def _scalars(row: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for key, value in row.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(float(value)):
            out[f"{prefix}{key}".replace("@", "_at_")] = float(value)
    return out


def _flatten(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


class RunLogger:
    """No tracker: the run record (history.csv, results.json) is the log (``logger=csv``)."""

    def start(self, run_dir: Path, config: dict, name: str) -> None:
        pass

    def log_epoch(self, row: dict) -> None:
        pass

    def log_results(self, results: dict) -> None:
        pass

    def finish(self, status: str) -> None:
        pass


class CSVLogger(RunLogger):
    """``history.csv`` (one row per epoch) and ``results.json``, written by the trainer anyway."""


class MLflowLogger(RunLogger):
    """One MLflow run per cdrbench run: the resolved config as params, every numeric epoch
    statistic as a metric stepped by epoch, the valid/test metrics and seconds at the end."""

    def __init__(self, tracking_uri: str, experiment: str = "cdrbench"):
        try:
            import mlflow
        except ImportError as error:
            raise ConfigError("logger=mlflow needs MLflow: pip install 'cdrbench[track]'") from error
        self.mlflow = mlflow
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.step = 0

    def start(self, run_dir: Path, config: dict, name: str) -> None:
        mlflow = self.mlflow
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_experiment(self.experiment)
        mlflow.start_run(run_name=name)
        params = {k: str(v)[:500] for k, v in _flatten(config).items()}
        keys = sorted(params)
        for start in range(0, len(keys), 100):  # MLflow takes at most 100 params per batch
            mlflow.log_params({k: params[k] for k in keys[start : start + 100]})
        mlflow.set_tag("cdrbench.run_dir", str(run_dir))

    def log_epoch(self, row: dict) -> None:
        self.mlflow.log_metrics(_scalars(row), step=self.step)
        self.step += 1

    def log_results(self, results: dict) -> None:
        metrics = {**_scalars(results["valid"], "final_valid_"), **_scalars(results["test"], "final_test_"),
                   **_scalars(results["seconds"], "seconds_")}
        self.mlflow.log_metrics(metrics)

    def finish(self, status: str) -> None:
        self.mlflow.end_run(status="FINISHED" if status == "finished" else "FAILED" if status == "failed" else "KILLED")


class TensorBoardLogger(RunLogger):
    """Scalars per epoch and the final metrics as ``hparams`` in ``<run_dir>/<subdir>``."""

    def __init__(self, subdir: str = "tensorboard"):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ConfigError("logger=tensorboard needs TensorBoard: pip install 'cdrbench[track]'") from error
        self.writer_class = SummaryWriter
        self.subdir = subdir
        self.writer = None
        self.step = 0
        self.params: dict = {}

    def start(self, run_dir: Path, config: dict, name: str) -> None:
        self.writer = self.writer_class(log_dir=str(Path(run_dir) / self.subdir))
        self.params = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in _flatten(config).items()}

    def log_epoch(self, row: dict) -> None:
        for key, value in _scalars(row).items():
            self.writer.add_scalar(key, value, self.step)
        self.step += 1

    def log_results(self, results: dict) -> None:
        metrics = {**_scalars(results["valid"], "final/valid_"), **_scalars(results["test"], "final/test_")}
        params = {k: v for k, v in self.params.items() if k.startswith(("method.", "optimizer.", "data.name", "seed"))}
        self.writer.add_hparams(params, metrics, run_name=".")

    def finish(self, status: str) -> None:
        if self.writer is not None:
            self.writer.close()

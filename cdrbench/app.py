"""Turns the composed config into objects and runs a stage. Nothing below this module reads the
config: data options become a :class:`~cdrbench.config.DataConfig` object, readers, models,
methods and optimisers are built with ``hydra.utils.instantiate``."""

from __future__ import annotations

import dataclasses
import json
import time
import typing
from pathlib import Path
from typing import Optional, get_type_hints

import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cdrbench.config import Config, DataConfig
from cdrbench.data.dataset import CrossDomainData
from cdrbench.data.prepare import compare_with_expected, prepare
from cdrbench.errors import ConfigError
from cdrbench.eval.ctr import rela_impr_auc, rela_impr_logloss
from cdrbench.eval.evaluator import Evaluator
from cdrbench.methods.base import Method
from cdrbench.train.record import (
    RESULTS, config_hash, find_resumable, format_table, git_sha, package_versions, results_table,
    write_artifacts, write_frame, write_json, write_status,
)
from cdrbench.train.artifact_cache import ArtifactCache
from cdrbench.train.runtime import Progress, peak_memory_bytes, resolve_device, seed_everything, set_num_threads
from cdrbench.train.trainer import LAST, Trainer, load_checkpoint

STAGES = ("prepare", "train")


def check_schema_keys(cfg: DictConfig) -> None:
    """Reject keys that are not in the schema even when added with Hydra's ``+key=...``
    (Hydra lets ``+`` append to typed nodes; a typo there would otherwise be ignored)."""
    hints = get_type_hints(Config)
    for name in ("data", "trainer", "eval"):
        _check_node(cfg[name], hints[name], name)


def _check_node(node, schema, path: str) -> None:
    hints = get_type_hints(schema)
    for key in node.keys():
        if key not in hints:
            raise ConfigError(f"unknown config key '{path}.{key}' (valid keys: {sorted(hints)})")
        value, expected = node[key], hints[key]
        if not isinstance(value, DictConfig):
            continue
        if dataclasses.is_dataclass(expected):
            _check_node(value, expected, f"{path}.{key}")
        elif typing.get_origin(expected) is dict and dataclasses.is_dataclass(typing.get_args(expected)[1]):
            for sub_key in value.keys():
                _check_node(value[sub_key], typing.get_args(expected)[1], f"{path}.{key}.{sub_key}")


def data_config(cfg: DictConfig) -> DataConfig:
    data = OmegaConf.to_object(cfg.data)
    assert isinstance(data, DataConfig)
    return data


def build_readers(data: DataConfig) -> dict:
    readers = {}
    for domain, spec in data.domains.items():
        try:
            readers[domain] = instantiate(spec.reader)
        except Exception as error:  # a bad reader argument is a config error: name the key
            raise ConfigError(f"data.domains.{domain}.reader: {error}") from error
    return readers


def load_data(cfg: DictConfig, progress: bool = True) -> tuple[CrossDomainData, DataConfig]:
    data_cfg = data_config(cfg)
    data = prepare(data_cfg, build_readers(data_cfg), progress=progress)
    return data, data_cfg


def format_statistics(stats: pd.DataFrame) -> str:
    shown = stats.copy()
    shown["density"] = shown["density"].map(lambda d: f"{100 * d:.4f}%")
    if "positive_share" in shown:
        shown["positive_share"] = shown["positive_share"].map(lambda d: f"{d:.3f}")
    return shown.to_string()


def run_prepare(cfg: DictConfig) -> CrossDomainData:
    data, data_cfg = load_data(cfg, progress=cfg.trainer.progress)
    print(f"\n{data.name}: {data.num_users} users; source {data.source_domains} -> target '{data.target_domain}'")
    print(format_statistics(data.statistics()))
    comparison = compare_with_expected(data.statistics(), data_cfg.expected)
    if comparison is not None:
        print("\nagainst the expected statistics (data.expected, from the paper or the reference):")
        print(comparison.to_string(index=False))
        if not comparison["match"].all():
            print("WARNING: prepared counts differ from the expected ones; see the table above")
    return data


def run(cfg: DictConfig, run_dir: Path):
    """Run ``cfg.stage``; ``run_dir`` receives the run record of a training run."""
    check_schema_keys(cfg)
    if cfg.stage not in STAGES:
        raise ConfigError(f"stage={cfg.stage!r} is not one of {list(STAGES)}")
    set_num_threads(cfg.trainer.num_threads)
    if cfg.stage == "prepare":
        return run_prepare(cfg)
    return run_training(cfg, run_dir)


# ---------------------------------------------------------------------------- training
def default_k(ks: list[int]) -> int:
    """20 when evaluated, else the largest K below 20, else the smallest K."""
    at_most_20 = [k for k in ks if k <= 20]
    return max(at_most_20) if at_most_20 else min(ks)


def default_monitor(tasks: list[str], ks: list[int]) -> str:
    return "auc" if tasks[0] == "ctr" else f"ndcg@{default_k(ks)}"


def build_method(cfg: DictConfig) -> tuple[str, Method]:
    params = OmegaConf.to_container(cfg.method, resolve=True)
    name = params.pop("name", None) or "method"
    if "_target_" not in params:
        raise ConfigError("method has no _target_: choose one with method=<name> (see conf/method/)")
    try:
        method = instantiate(params, _convert_="all")
    except Exception as error:
        raise ConfigError(f"method '{name}': {error}") from error
    return name, method


def data_view(data: CrossDomainData, use_source: Optional[bool], method: Method, name: str) -> CrossDomainData:
    use = method.uses_source_by_default if use_source is None else use_source
    if use and not data.source_domains:
        raise ConfigError(f"method '{name}' trains on source domains, but data '{data.name}' has none")
    return data if use else data.target_only()


def relaimpr_against(test_metrics: dict, baseline_dir: Path) -> dict:
    """RelaImpr of AUC and LogLoss against the test metrics of the run in ``baseline_dir``."""
    path = baseline_dir / RESULTS
    if not path.is_file():
        raise ConfigError(f"eval.baseline_run={baseline_dir}: no {RESULTS} there (not a finished run)")
    baseline = json.loads(path.read_text())
    out: dict = {"baseline_run": str(baseline_dir), "baseline_method": baseline.get("method")}
    for metric, formula in (("auc", rela_impr_auc), ("logloss", rela_impr_logloss)):
        ours, theirs = test_metrics.get(metric), baseline["test"].get(metric)
        if ours is None or theirs is None:
            raise ConfigError(f"eval.baseline_run: {metric} is missing or undefined in this run or in {path}")
        out[f"relaimpr_{metric}"] = formula(ours, theirs)
    return out


def run_training(cfg: DictConfig, run_dir: Path) -> dict:
    """Prepare, train, evaluate and write the run record into ``run_dir``; returns results.json."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    chash = config_hash(resolved)
    seed = int(cfg.seed)
    trainer_cfg = cfg.trainer
    started = time.perf_counter()

    resume_dir = None
    if trainer_cfg.resume_from or trainer_cfg.resume:
        resume_dir = Path(trainer_cfg.resume_from) if trainer_cfg.resume_from else find_resumable(Path(cfg.output_root), chash, seed)
        if resume_dir is None or not (resume_dir / LAST).is_file():
            where = trainer_cfg.resume_from or f"under {cfg.output_root}/"
            raise ConfigError(f"trainer.resume: no unfinished run with config {chash} and seed {seed} ({where}) has a last.pt")
        last = load_checkpoint(resume_dir / LAST)
        if last.get("config_yaml") and config_hash(OmegaConf.to_container(OmegaConf.create(last["config_yaml"]))) != chash:
            raise ConfigError(f"trainer.resume: the checkpoint in {resume_dir} was written with a different config")

    (run_dir / "config.yaml").write_text(config_yaml)
    write_status(run_dir, status="running", config_hash=chash, seed=seed, data=cfg.data.name,
                 method=cfg.method.name, resumed_from=str(resume_dir) if resume_dir else None)
    try:
        record = _train_and_record(cfg, run_dir, chash, seed, config_yaml, resume_dir, started)
    except BaseException as error:
        write_status(run_dir, status="failed" if not isinstance(error, KeyboardInterrupt) else "interrupted",
                     error=f"{type(error).__name__}: {error}")
        raise
    write_status(run_dir, status="finished")
    return record


def _train_and_record(cfg, run_dir: Path, chash: str, seed: int, config_yaml: str, resume_dir, started: float) -> dict:
    trainer_cfg, eval_cfg = cfg.trainer, cfg.eval
    data, data_cfg = load_data(cfg, progress=trainer_cfg.progress)
    device = resolve_device(trainer_cfg.device)
    seed_everything(seed, trainer_cfg.deterministic, device)
    name, method = build_method(cfg)
    tasks = list(eval_cfg.tasks)
    missing = [t for t in tasks if t not in method.tasks]
    if missing:
        raise ConfigError(f"method '{name}' cannot be evaluated on {missing} (it supports {sorted(method.tasks)})")
    view = data_view(data, data_cfg.use_source, method, name)
    evaluator = Evaluator(
        view, tasks=tasks, ks=list(eval_cfg.ks), map_denominator=eval_cfg.map_denominator,
        chunk_size=eval_cfg.chunk_size, max_chunk_bytes=eval_cfg.max_chunk_bytes, gauc=eval_cfg.gauc,
        batch_size=eval_cfg.batch_size, device=device,
    )
    monitor = trainer_cfg.monitor or default_monitor(tasks, list(eval_cfg.ks))
    if trainer_cfg.artifact_cache:
        method.artifact_cache = ArtifactCache(trainer_cfg.artifact_dir)
    method.setup(view, device, seed)
    trainer = Trainer(
        method, evaluator, run_dir, max_epochs=trainer_cfg.max_epochs, eval_every=trainer_cfg.eval_every,
        patience=trainer_cfg.patience, min_epochs=trainer_cfg.min_epochs, monitor=monitor,
        save_last=trainer_cfg.save_last, progress=Progress(trainer_cfg.progress), config_yaml=config_yaml,
    )
    if resume_dir is not None:
        trainer.restore(load_checkpoint(resume_dir / LAST))
        print(f"resuming {resume_dir} at phase {trainer.state.phase}, epoch {trainer.state.epoch}")
    train_started = time.perf_counter()
    state = trainer.fit()
    train_seconds = time.perf_counter() - train_started

    with method.evaluation():
        valid = evaluator.evaluate(method, "valid", keep_rows=True)
        test = evaluator.evaluate(method, "test", keep_rows=True)

    for result in (valid, test):
        if result.per_user is not None:
            write_frame(run_dir / f"per_user_{result.split}.parquet", result.per_user)
        if result.predictions is not None:
            write_frame(run_dir / f"pred_{result.split}.parquet", result.predictions)
    if state.history:
        write_frame(run_dir / "history.csv", pd.DataFrame(state.history))
    write_artifacts(run_dir, method.artifacts())

    epochs_run = [row for row in state.history]
    seconds_per_epoch = (sum(r["train_seconds"] for r in epochs_run) / len(epochs_run)) if epochs_run else 0.0
    results = {
        "method": name,
        "data": data.name,
        "variant": cfg.method.get("variant"),
        "profile": cfg.method.get("profile"),
        "seed": seed,
        "config_hash": chash,
        "tag": cfg.tag,
        "tasks": tasks,
        "monitor": monitor,
        "best_epoch": state.best_epoch,
        "epochs_run": len(epochs_run),
        "stopped_early": state.stopped_early,
        "valid": valid.metrics,
        "test": test.metrics,
        "notes": {**{f"valid_{k}": v for k, v in valid.notes.items()}, **{f"test_{k}": v for k, v in test.notes.items()}},
        "seconds": {"total": time.perf_counter() - started, "train": train_seconds,
                    "per_epoch": seconds_per_epoch, "eval_test": test.seconds},
        "memory": peak_memory_bytes(device),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "torch_threads": torch.get_num_threads(),
        "num_parameters": method.num_parameters(),
        "data_cache_key": data.manifest.get("cache_key"),
        "resumed_from": str(resume_dir) if resume_dir else None,
        "versions": package_versions(),
        "git_sha": git_sha(),
        "run_dir": str(run_dir),
    }
    if eval_cfg.baseline_run:
        results["relaimpr"] = relaimpr_against(test.metrics, Path(eval_cfg.baseline_run))
    write_json(run_dir / RESULTS, results)

    shown_k = int(monitor.split("@")[1]) if "@" in monitor else default_k(list(eval_cfg.ks))
    table = results_table(valid.metrics, test.metrics, shown_k)
    print(f"\n{name} on {data.name} (seed {seed}; best epoch {state.best_epoch}; "
          f"{results['seconds']['total']:.1f} s; peak RSS {results['memory']['peak_rss_bytes'] / 2**20:.0f} MiB)")
    print(format_table(table))
    for key, value in (results.get("relaimpr") or {}).items():
        print(f"{key}: {value:+.2f}%" if isinstance(value, float) else f"{key}: {value}")
    for note in results["notes"].values():
        print(f"note: {note}")
    print(f"run directory: {run_dir}")
    return results

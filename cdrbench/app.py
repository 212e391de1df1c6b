"""Turns the composed config into objects and runs a stage. Nothing below this module reads the
config: data options become a :class:`~cdrbench.config.DataConfig` object, readers, models,
methods and optimisers are built with ``hydra.utils.instantiate``.

Order of a training run, cheapest checks first: the config alone (:mod:`cdrbench.validate`),
then the method object (its constructor checks its own options: ``method.variant`` and friends,
before any data is touched), the optimiser, the device and a resume checkpoint; only then the run
directory is written, the data prepared (click labels checked) and the method trained.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Optional

import pandas as pd
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cdrbench.config import DataConfig
from cdrbench.data.dataset import CrossDomainData
from cdrbench.data.prepare import compare_with_expected, prepare, preparation_report
from cdrbench.errors import CdrbenchError, ConfigError, OutputError
from cdrbench.eval.ctr import rela_impr_auc, rela_impr_logloss
from cdrbench.eval.evaluator import Evaluator, check_click_labels
from cdrbench.methods.base import Method
from cdrbench.train.artifact_cache import ArtifactCache
from cdrbench.train.loggers import RunLogger
from cdrbench.train.record import (
    METRICS_CSV, RESULTS, RUN_STATUS, completed_resumptions, config_hash, find_finished, find_resumable, format_table,
    git_sha, metrics_frame, package_versions, record_failure, results_table, write_artifacts, write_frame, write_json,
    write_status,
)
from cdrbench.train.runtime import (
    Progress, atomic_write_bytes, peak_memory_bytes, resolve_device, seed_everything, set_num_threads,
)
from cdrbench.train.trainer import LAST, LAST_KEYS, Trainer, load_checkpoint
from cdrbench.validate import STAGES, check_config, check_schema_keys  # noqa: F401 (re-exported)


# ---------------------------------------------------------------------------- building objects
def _user_error(error: BaseException) -> Optional[CdrbenchError]:
    """The cdrbench error a constructor raised, however deep Hydra wrapped it."""
    while error is not None:
        if isinstance(error, CdrbenchError):
            return error
        error = error.__cause__ or error.__context__
    return None


def instantiate_option(spec, key: str, **kwargs):
    """``hydra.utils.instantiate`` for a config option: a constructor's own ConfigError comes back
    alone (not wrapped in Hydra's "Error in call to target" text); any other constructor error
    (an unknown argument, a wrong type) becomes a ConfigError naming ``key``."""
    try:
        return instantiate(spec, **kwargs)
    except Exception as error:
        user = _user_error(error)
        if user is not None:
            raise user from None
        cause = error.__cause__ if isinstance(error, InstantiationException) and error.__cause__ else error
        target = spec.get("_target_") if hasattr(spec, "get") else None
        raise ConfigError(f"{key}" + (f" ({target})" if target else "") + f": {cause}") from None


def data_config(cfg: DictConfig) -> DataConfig:
    data = OmegaConf.to_object(cfg.data)
    assert isinstance(data, DataConfig)
    return data


def build_readers(data: DataConfig) -> dict:
    return {domain: instantiate_option(spec.reader, f"data.domains.{domain}.reader") for domain, spec in data.domains.items()}


def load_data(cfg: DictConfig, progress: bool = True) -> tuple[CrossDomainData, DataConfig]:
    data_cfg = data_config(cfg)
    data = prepare(data_cfg, build_readers(data_cfg), progress=progress)
    return data, data_cfg


#: the factories (``_partial_``) a method calls in ``setup``, and a tiny call that makes their
#: constructors check their arguments before any data is prepared
PROBES = {
    "optimizer": lambda factory: factory([torch.nn.Parameter(torch.zeros(1))]),
    "backbone": lambda factory: factory(num_users=2, num_items=2),
}


def build_method(cfg: DictConfig) -> tuple[str, Method]:
    """The method object from its options alone (no data): its constructor rejects bad options
    before any preparation starts. The optimiser and backbone factories are called once on tiny
    inputs for the same reason (torch checks ``lr``, ``betas``, sizes only when they are built)."""
    params = OmegaConf.to_container(cfg.method, resolve=True)
    name = params.pop("name", None) or "method"
    if "_target_" not in params:
        raise ConfigError("method has no _target_: choose one with method=<name> (see conf/method/)")
    method = instantiate_option(params, f"method '{name}'", _convert_="all")
    for group, probe in PROBES.items():
        spec = cfg.get(group)
        if isinstance(spec, DictConfig) and "_target_" in spec:
            factory = instantiate_option(spec, group)
            try:
                probe(factory)
            except (TypeError, ValueError, RuntimeError) as error:
                raise ConfigError(f"{group} ({spec._target_}): {error}") from None
    return name, method


# ---------------------------------------------------------------------------- prepare stage
def format_statistics(stats: pd.DataFrame) -> str:
    shown = stats.copy()
    shown["density"] = shown["density"].map(lambda d: f"{100 * d:.4f}%")
    if "positive_share" in shown:
        shown["positive_share"] = shown["positive_share"].map(lambda d: f"{d:.3f}")
    return shown.to_string()


def format_steps(steps: pd.DataFrame, domains: list[str]) -> str:
    """Rows per domain after each step, with what the step dropped in brackets."""
    shown = steps.copy()
    for domain in domains:
        before = steps[domain].shift(1)
        shown[domain] = [f"{int(n)}" + (f" (-{int(b - n)})" if pd.notna(b) and b > n else "")
                         for n, b in zip(steps[domain], before)]
    return shown.to_string(index=False)


PREPARE_FILES = {"statistics": "statistics.csv", "steps": "steps.csv", "findings": "findings.txt", "config": "data.yaml"}


def run_prepare(cfg: DictConfig, run_dir: Optional[Path] = None) -> CrossDomainData:
    """Print what the data config resolved to and what preparation did; with ``run_dir`` also
    write it there (``statistics.csv``, ``steps.csv``, ``findings.txt``, ``data.yaml``)."""
    data_yaml = OmegaConf.to_yaml(cfg.data, resolve=True)
    for name in PREPARE_FILES.values():  # tables of an earlier run would pass for this one's
        if run_dir is not None and (Path(run_dir) / name).is_file():
            (Path(run_dir) / name).unlink()
    print(f"data config (resolved):\n{data_yaml}")
    data, data_cfg = load_data(cfg, progress=cfg.trainer.progress)
    report = preparation_report(data)
    print(f"\n{data.name}: {data.num_users} users; source {data.source_domains} -> target '{data.target_domain}'")
    print("\nrows after each step (dropped in brackets):")
    print(format_steps(report["steps"], data.domains))
    print("\nfindings:")
    for line in report["findings"]:
        print(f"  {line}")
    print("\nstatistics:")
    print(format_statistics(report["statistics"]))
    comparison = compare_with_expected(report["statistics"], data_cfg.expected)
    if comparison is not None:
        print("\nagainst the expected statistics (data.expected, from the paper or the reference):")
        print(comparison.to_string(index=False))
        if not comparison["match"].all():
            print("WARNING: prepared counts differ from the expected ones; see the table above")
    if run_dir is not None:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_frame(run_dir / PREPARE_FILES["statistics"], report["statistics"].reset_index())
        write_frame(run_dir / PREPARE_FILES["steps"], report["steps"])
        atomic_write_bytes(run_dir / PREPARE_FILES["findings"], "".join(f"{line}\n" for line in report["findings"]).encode())
        atomic_write_bytes(run_dir / PREPARE_FILES["config"], data_yaml.encode())
        print(f"\nwritten to {run_dir}: {', '.join(PREPARE_FILES.values())} (prepared data: {data.path})")
    return data


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run(cfg: DictConfig, run_dir: Path):
    """Run ``cfg.stage``; ``run_dir`` receives the run record of a training run (or the tables of
    ``stage=prepare``).

    In a multirun a job never raises (a failed job must not stop the sweep): its error is
    printed, recorded as ``failed`` in its ``run.json`` and returned as ``{"status": "failed"}``;
    the multirun's end callback lists the failed jobs and exits non-zero."""
    if not in_multirun():
        return _run(cfg, run_dir)
    try:
        return _run(cfg, run_dir)
    except KeyboardInterrupt:
        raise
    except Exception as error:
        user_error = isinstance(error, CdrbenchError)
        message = str(error) if user_error else f"{type(error).__name__}: {error}"
        if not user_error:
            traceback.print_exc()
        print(f"cdrbench: error: job failed ({Path(run_dir).name}): {message}", file=sys.stderr)
        status_file = Path(run_dir) / RUN_STATUS
        if not status_file.exists() or json.loads(status_file.read_text()).get("status") != "failed":
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            write_status(Path(run_dir), status="failed", error=message, seed=int(cfg.seed),
                         data=cfg.data.get("name"), method=cfg.method.get("name"))
        return {"status": "failed", "error": message, "run_dir": str(run_dir)}


def check_report_paper(cfg: DictConfig) -> None:
    """``report.paper`` must name a paper table that exists, before any work (not at the report)."""
    key = cfg.get("report", {}).get("paper")
    if key:
        from cdrbench.report.papers import available_tables

        if key not in available_tables():
            raise ConfigError(f"report.paper={key!r} is not a paper table (available: {available_tables()})")


def _run(cfg: DictConfig, run_dir: Path):
    check_config(cfg)
    check_report_paper(cfg)
    set_num_threads(cfg.trainer.num_threads)
    if cfg.stage == "prepare":
        return run_prepare(cfg, run_dir)
    return run_training(cfg, run_dir)


# ---------------------------------------------------------------------------- training
def default_k(ks: list[int]) -> int:
    """20 when evaluated, else the largest K below 20, else the smallest K."""
    at_most_20 = [k for k in ks if k <= 20]
    return max(at_most_20) if at_most_20 else min(ks)


def default_monitor(tasks: list[str], ks: list[int]) -> str:
    return "auc" if tasks[0] == "ctr" else f"ndcg@{default_k(ks)}"


def check_source_domains(data_cfg: DataConfig, method: Method, name: str) -> None:
    """A method that trains on source domains needs some: checked before the data is prepared."""
    use = method.uses_source_by_default if data_cfg.use_source is None else data_cfg.use_source
    if use and not data_cfg.source:
        raise ConfigError(f"method '{name}' trains on source domains, but data '{data_cfg.name}' has none "
                          "(data.source is empty)")


def data_view(data: CrossDomainData, use_source: Optional[bool], method: Method, name: str) -> CrossDomainData:
    use = method.uses_source_by_default if use_source is None else use_source
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


def find_resume_dir(cfg: DictConfig, chash: str, seed: int) -> tuple[Optional[Path], Optional[dict]]:
    """The run to continue (``trainer.resume`` / ``resume_from``) and its checkpoint, checked."""
    trainer_cfg = cfg.trainer
    if not (trainer_cfg.resume_from or trainer_cfg.resume):
        return None, None
    output_root = Path(cfg.output_root)
    resume_dir = Path(trainer_cfg.resume_from) if trainer_cfg.resume_from else find_resumable(output_root, chash, seed)
    if resume_dir is None or not (resume_dir / LAST).is_file():
        done = [] if trainer_cfg.resume_from else completed_resumptions(output_root, chash, seed)
        if done:
            raise ConfigError(
                f"trainer.resume: nothing left to resume for config {chash} and seed {seed}: the interrupted run "
                f"{done[-1][0]} was resumed to completion by {done[-1][1]}"
            )
        where = trainer_cfg.resume_from or f"under {cfg.output_root}/"
        raise ConfigError(f"trainer.resume: no unfinished run with config {chash} and seed {seed} ({where}) has a last.pt")
    last = load_checkpoint(resume_dir / LAST, required=LAST_KEYS)
    if last.get("config_yaml") and config_hash(OmegaConf.to_container(OmegaConf.create(last["config_yaml"]))) != chash:
        raise ConfigError(f"trainer.resume: the checkpoint in {resume_dir} was written with a different config")
    return resume_dir, last


def _make_run_dir(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create the run directory {run_dir}: {error.strerror or error}") from None
    if not run_dir.is_dir():
        raise OutputError(f"cannot create the run directory {run_dir}: a file of that name exists")


def by_phase(history: list[dict], column: str, how: str) -> dict[str, float]:
    """``how`` (mean, max) of a history column within each phase (e.g. HAGO's pretrain and tune)."""
    frame = pd.DataFrame(history)
    if frame.empty or column not in frame:
        return {}
    return {str(k): float(v) for k, v in frame.groupby("phase", sort=False)[column].agg(how).items()}


def run_training(cfg: DictConfig, run_dir: Path) -> dict:
    """Prepare, train, evaluate and write the run record into ``run_dir``; returns results.json."""
    run_dir = Path(run_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    chash = config_hash(resolved)
    seed = int(cfg.seed)
    started = time.perf_counter()

    trainer_cfg = cfg.trainer
    skip = trainer_cfg.skip_finished if trainer_cfg.skip_finished is not None else in_multirun()
    if skip and not (trainer_cfg.resume_from or trainer_cfg.resume):
        done = find_finished([run_dir, run_dir.parent, cfg.output_root], chash, seed)
        if done is not None:
            print(f"skipping: {done} already has {RESULTS} for config {chash} and seed {seed} "
                  "(trainer.skip_finished=false runs it again)")
            if done.resolve() != run_dir.resolve():
                _make_run_dir(run_dir)
                write_status(run_dir, status="skipped", duplicate_of=str(done), config_hash=chash, seed=seed)
            return json.loads((done / RESULTS).read_text())

    # everything that needs no data, before anything is written or prepared
    device = resolve_device(cfg.trainer.device)
    seed_everything(seed, cfg.trainer.deterministic, device)  # (for constructors that draw)
    name, method = build_method(cfg)
    check_source_domains(data_config(cfg), method, name)
    tasks = list(cfg.eval.tasks)
    missing = [t for t in tasks if t not in method.tasks]
    if missing:
        raise ConfigError(f"method '{name}' cannot be evaluated on {missing} (it supports {sorted(method.tasks)})")
    resume_dir, last = find_resume_dir(cfg, chash, seed)

    _make_run_dir(run_dir)
    (run_dir / "config.yaml").write_text(config_yaml)
    write_status(run_dir, status="running", config_hash=chash, seed=seed, data=cfg.data.name,
                 method=cfg.method.name, resumed_from=str(resume_dir) if resume_dir else None, pid=os.getpid())
    try:
        record = _train_and_record(cfg, run_dir, name, method, device, chash, seed, config_yaml, resume_dir, last, started)
    except BaseException as error:
        record_failure(run_dir, status="failed" if not isinstance(error, KeyboardInterrupt) else "interrupted",
                       error=f"{type(error).__name__}: {error}")
        raise
    write_status(run_dir, status="finished")
    if resume_dir is not None:  # that run is done now: trainer.resume must not pick it again
        record_failure(resume_dir, resumed_by=str(run_dir))
    return record


def build_logger(cfg: DictConfig) -> RunLogger:
    if cfg.get("logger") is None:
        return RunLogger()
    try:
        tracker = instantiate(cfg.logger)
    except Exception as error:
        cause = error.__cause__ if isinstance(error.__cause__, CdrbenchError) else error
        raise ConfigError(f"logger: {cause}") from error
    if not isinstance(tracker, RunLogger):
        raise ConfigError(f"logger: {type(tracker).__name__} is not a cdrbench.train.loggers.RunLogger")
    return tracker


def _train_and_record(cfg, run_dir: Path, name: str, method: Method, device, chash: str, seed: int,
                      config_yaml: str, resume_dir, last: Optional[dict], started: float) -> dict:
    tracker = build_logger(cfg)
    tracker.start(run_dir, OmegaConf.to_container(cfg, resolve=True), name=run_dir.name)
    try:
        results = _train_evaluate(cfg, run_dir, name, method, device, chash, seed, config_yaml, resume_dir, last,
                                  started, tracker)
    except BaseException:
        tracker.finish("failed")
        raise
    tracker.finish("finished")
    return results


def _train_evaluate(cfg, run_dir: Path, name: str, method: Method, device, chash: str, seed: int,
                    config_yaml: str, resume_dir, last: Optional[dict], started: float, tracker: RunLogger) -> dict:
    trainer_cfg, eval_cfg = cfg.trainer, cfg.eval
    tasks = list(eval_cfg.tasks)
    data, data_cfg = load_data(cfg, progress=trainer_cfg.progress)
    if "ctr" in tasks:  # first: implicit data rules out a CTR method whatever its domains
        check_click_labels(data)
    view = data_view(data, data_cfg.use_source, method, name)
    evaluator = Evaluator(
        view, tasks=tasks, ks=list(eval_cfg.ks), map_denominator=eval_cfg.map_denominator,
        chunk_size=eval_cfg.chunk_size, max_chunk_bytes=eval_cfg.max_chunk_bytes, gauc=eval_cfg.gauc,
        batch_size=eval_cfg.batch_size, device=device, negatives=eval_cfg.negatives,
        negatives_seed=eval_cfg.negatives_seed,
    )
    monitor = trainer_cfg.monitor or default_monitor(tasks, list(eval_cfg.ks))
    if trainer_cfg.artifact_cache:
        method.artifact_cache = ArtifactCache(trainer_cfg.artifact_dir)
    seed_everything(seed, trainer_cfg.deterministic)
    method.setup(view, device, seed)
    trainer = Trainer(
        method, evaluator, run_dir, max_epochs=trainer_cfg.max_epochs, eval_every=trainer_cfg.eval_every,
        patience=trainer_cfg.patience, min_epochs=trainer_cfg.min_epochs, monitor=monitor,
        save_last=trainer_cfg.save_last, progress=Progress(trainer_cfg.progress), config_yaml=config_yaml,
        on_epoch=tracker.log_epoch,
        stopping_rule=trainer_cfg.stopping_rule,
    )
    if resume_dir is not None:
        trainer.restore(last)
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
        trainer.write_history()
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
        "protocol": f"sampled ({eval_cfg.negatives} negatives, seed {eval_cfg.negatives_seed})" if eval_cfg.negatives else "full ranking",
        "best_epoch": state.best_epoch,
        "epochs_run": len(epochs_run),
        "stopped_early": state.stopped_early,
        "valid": valid.metrics,
        "test": test.metrics,
        "notes": {**{f"valid_{k}": v for k, v in valid.notes.items()}, **{f"test_{k}": v for k, v in test.notes.items()}},
        "seconds": {"total": time.perf_counter() - started, "train": train_seconds,
                    "per_epoch": seconds_per_epoch, "per_epoch_by_phase": by_phase(epochs_run, "train_seconds", "mean"),
                    "eval_test": test.seconds},
        "memory": {**peak_memory_bytes(device), "peak_rss_mib_by_phase": by_phase(epochs_run, "peak_rss_mib", "max")},
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
    write_frame(run_dir / METRICS_CSV, metrics_frame(results))
    tracker.log_results(results)
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

"""Run records under a directory -> one pandas DataFrame (one row per finished run).

A notebook does the same as ``cdrbench report`` with::

    from cdrbench.report import collect_results
    runs = collect_results("outputs/multirun/2026-12-01/...")

A *finished* run is a directory with ``results.json`` (written last and atomically by the
trainer). A directory with ``run.json`` but no ``results.json`` is unfinished (running, failed,
interrupted) and is skipped with a line saying so; a job skipped as a duplicate of a finished
run (``status: skipped``) is listed as such.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
import yaml

RESULTS = "results.json"
RUN_STATUS = "run.json"
CONFIG = "config.yaml"

#: flattened config keys that never tell two rows of a table apart (where/how a run happened)
_NOT_A_LABEL = (
    "seed", "stage", "tag", "output_root", "report.", "logger", "hparams_search", "trainer.resume",
    "trainer.progress", "trainer.save_last", "trainer.artifact", "trainer.device", "data.root",
    "data.cache_dir", "data.download", "eval.chunk_size", "eval.max_chunk_bytes", "eval.batch_size",
)


@dataclass
class RunScan:
    """What :func:`scan_runs` found: finished runs and the directories it left out (and why)."""

    runs: pd.DataFrame
    unfinished: list[tuple[Path, str]] = field(default_factory=list)
    duplicates: list[tuple[Path, str]] = field(default_factory=list)


def flatten(node, prefix: str = "") -> dict:
    """Nested dicts -> ``{"a.b.c": value}`` (lists kept as values)."""
    out = {}
    if isinstance(node, dict):
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
    else:
        out[prefix[:-1]] = node
    return out


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _read_config(run_dir: Path) -> dict:
    path = run_dir / CONFIG
    if not path.is_file():
        return {}
    try:
        return flatten(yaml.safe_load(path.read_text()) or {})
    except yaml.YAMLError:
        return {}


def _run_row(run_dir: Path, results: dict) -> dict:
    config = _read_config(run_dir)
    seconds = results.get("seconds") or {}
    memory = results.get("memory") or {}
    row = {
        "run_dir": str(run_dir),
        "data": results.get("data"),
        "method": results.get("method"),
        "variant": results.get("variant"),
        "profile": results.get("profile"),
        "seed": results.get("seed"),
        "config_hash": results.get("config_hash"),
        "tag": results.get("tag"),
        "row": config.get("report.row"),
        "paper_table": config.get("report.paper"),
        "monitor": results.get("monitor"),
        "best_epoch": results.get("best_epoch"),
        "epochs_run": results.get("epochs_run"),
        "seconds_total": seconds.get("total"),
        "seconds_per_epoch": seconds.get("per_epoch"),
        "peak_rss_bytes": memory.get("peak_rss_bytes"),
        "mtime": (run_dir / RESULTS).stat().st_mtime,
    }
    for split in ("valid", "test"):
        for metric, value in (results.get(split) or {}).items():
            row[f"{split}_{metric}"] = value
    row["_config"] = config
    return row


def scan_runs(directory, log: Callable[[str], None] = print) -> RunScan:
    """Every run record under ``directory`` (any depth). Duplicates of one (config hash, seed)
    keep the most recent run; unfinished runs are reported through ``log`` and left out."""
    directory = Path(directory)
    rows, unfinished, duplicates = [], [], []
    seen_dirs = set()
    for results_path in sorted(directory.glob(f"**/{RESULTS}")):
        results = _read_json(results_path)
        if results is None or "test" not in results:
            unfinished.append((results_path.parent, "results.json unreadable"))
            continue
        rows.append(_run_row(results_path.parent, results))
        seen_dirs.add(results_path.parent)
    for status_path in sorted(directory.glob(f"**/{RUN_STATUS}")):
        run_dir = status_path.parent
        if run_dir in seen_dirs:
            continue
        status = _read_json(status_path) or {}
        state = status.get("status", "unknown")
        if state == "skipped":
            duplicates.append((run_dir, f"skipped: same config and seed as {status.get('duplicate_of')}"))
            continue
        reason = state + (f" ({status['error']})" if status.get("error") else "")
        unfinished.append((run_dir, reason))
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame = frame.sort_values("mtime")
        dup = frame.duplicated(["data", "config_hash", "seed"], keep="last")
        for run_dir in frame.loc[dup, "run_dir"]:
            duplicates.append((Path(run_dir), "older run of the same config hash and seed (the newest is used)"))
        frame = frame.loc[~dup].sort_values(["data", "method", "config_hash", "seed"]).reset_index(drop=True)
    for run_dir, reason in unfinished:
        log(f"skipping unfinished run {run_dir}: {reason}")
    for run_dir, reason in duplicates:
        log(f"not counted: {run_dir}: {reason}")
    return RunScan(frame, unfinished, duplicates)


def collect_results(directory, log: Callable[[str], None] = print) -> pd.DataFrame:
    """One row per finished run under ``directory``: identity columns (data, method, variant,
    profile, seed, config_hash, row label), cost columns and ``valid_<metric>`` /
    ``test_<metric>`` for every metric in results.json. Unfinished runs are skipped with a line."""
    scan = scan_runs(directory, log=log)
    frame = scan.runs
    if frame.empty:
        return frame
    frame = frame.assign(row=row_labels(frame))
    return frame.drop(columns=["_config", "mtime"])


def row_labels(frame: pd.DataFrame) -> pd.Series:
    """The label of each run's table row: ``report.row`` when a preset sets it; otherwise the
    method name plus the config values that tell this method's configurations apart in this
    collection (e.g. ``bignas (method.variant=no_impo)``, ``lightgcn (data.use_source=true)``)."""
    labels = pd.Series(frame["method"].astype(str), index=frame.index)
    explicit = frame["row"].notna() if "row" in frame else pd.Series(False, index=frame.index)
    configs = frame["_config"] if "_config" in frame else pd.Series([{}] * len(frame), index=frame.index)
    for method, part in frame[~explicit].groupby("method"):
        varying = _varying_keys(configs.loc[part.index], part)
        for index in part.index:
            config = configs.loc[index]
            if varying:
                shown = ", ".join(f"{key}={_short(config.get(key))}" for key in varying)
                labels.loc[index] = f"{method} ({shown})"
    if explicit.any():
        labels.loc[explicit] = frame.loc[explicit, "row"].astype(str)
    return labels


def _varying_keys(configs: pd.Series, part: pd.DataFrame) -> list[str]:
    """Keys whose value differs between configurations of one method on the same data set."""
    varying: set[str] = set()
    for _, same_data in part.groupby("data"):
        by_hash = same_data.drop_duplicates("config_hash")
        if len(by_hash) < 2:
            continue
        dicts = [configs.loc[i] for i in by_hash.index]
        keys = set().union(*dicts)
        for key in keys:
            if key.startswith(_NOT_A_LABEL):
                continue
            values = {json.dumps(d.get(key), sort_keys=True, default=str) for d in dicts}
            if len(values) > 1:
                varying.add(key)
    # prefer the keys a user changed: method.* and data.use_source before derived values
    return sorted(varying, key=lambda k: (not k.startswith("method."), k))[:3]


def _short(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else str(value)

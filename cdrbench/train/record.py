"""The run record: what one run leaves in its directory, and the printed results table.

Files (``results.json`` is written last and atomically: a run that crashes leaves none):

``config.yaml``              the resolved config, plain YAML
``run.json``                 status (running / finished / failed with the error / interrupted),
                             config hash, seed; ``resumed_by`` once another run finished it
``history.csv``              per epoch (rewritten after every epoch): phase, train loss and
                             statistics, validation metrics
``per_user_{valid,test}.parquet``  top-N metrics per evaluated user (paired tests, re-aggregation)
``pred_{valid,test}.parquet``      CTR rows: user, item, y, p
``best.pt`` / ``last.pt``    best checkpoint / resume checkpoint (state dicts + config YAML)
<method artifacts>           e.g. BiGNAS ``alpha.jsonl``, ``importance.parquet``
``metrics.csv``              the metrics flat: one row per split and metric (``pd.read_csv``)
``results.json``             metrics, selected epoch, seconds, memory, device, versions, git SHA

Every file is written atomically with the umask's mode (readable like any other output).
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Optional

import pandas as pd

from cdrbench.train.runtime import atomic_save, atomic_write_bytes

RESULTS = "results.json"
RUN_STATUS = "run.json"
METRICS_CSV = "metrics.csv"
PACKAGES = ("cdrbench", "torch", "torch-geometric", "hydra-core", "omegaconf", "numpy", "pandas", "scikit-learn", "scipy")

#: config keys that do not change what a run computes (excluded from the config hash)
NON_SEMANTIC_KEYS = (
    "seed", "stage", "tag", "output_root",
    "trainer.resume", "trainer.resume_from", "trainer.progress", "trainer.save_last",
    "trainer.artifact_cache", "trainer.artifact_dir",
    "data.root", "data.cache_dir", "data.download",
    "trainer.skip_finished", "report", "logger", "hparams_search",
)


def config_hash(config: dict) -> str:
    """sha256 (first 12 hex digits) of the resolved config without the seed and the keys that
    only say where or how visibly a run happens; runs that differ only by seed share it."""
    pruned = json.loads(json.dumps(config, default=str))
    for dotted in NON_SEMANTIC_KEYS:
        node, *path = dotted.split(".")
        parent = pruned
        keys = [node, *path]
        for key in keys[:-1]:
            parent = parent.get(key, {}) if isinstance(parent, dict) else {}
        if isinstance(parent, dict):
            parent.pop(keys[-1], None)
    blob = json.dumps(pruned, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def package_versions() -> dict[str, Optional[str]]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def git_sha() -> Optional[str]:
    """Commit of the cdrbench source tree when it is a git checkout (editable installs)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def write_json(path: Path, payload: dict) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n").encode())


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def read_status(run_dir: Path) -> dict:
    path = Path(run_dir) / RUN_STATUS
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_status(run_dir: Path, **fields) -> None:
    path = Path(run_dir) / RUN_STATUS
    current = read_status(run_dir)
    current.update(fields)
    write_json(path, current)


def record_failure(run_dir: Path, **fields) -> None:
    """``write_status`` for a run that is failing: never raises, and when the atomic write
    itself fails (a full disk has no room for the temporary copy) it overwrites ``run.json`` in
    place, which needs no more space than the file already holds."""
    try:
        write_status(run_dir, **fields)
    except OSError:
        try:
            current = read_status(run_dir)
            current.update(fields)
            with open(Path(run_dir) / RUN_STATUS, "r+") as handle:
                handle.truncate(0)
                handle.write(json.dumps(current, sort_keys=True, default=_json_default))
        except OSError:
            pass


def write_frame(path: Path, frame: pd.DataFrame) -> None:
    if path.suffix == ".csv":
        atomic_save(path, lambda tmp: frame.to_csv(tmp, index=False))
    else:
        atomic_save(path, lambda tmp: frame.to_parquet(tmp, index=False))


def write_artifacts(run_dir: Path, artifacts: dict) -> None:
    """``name -> DataFrame`` (parquet), ``list`` (JSON lines) or ``dict`` (JSON)."""
    for name, value in artifacts.items():
        path = Path(run_dir) / name
        if isinstance(value, pd.DataFrame):
            write_frame(path, value)
        elif isinstance(value, list):
            lines = "".join(json.dumps(v, sort_keys=True, default=_json_default) + "\n" for v in value)
            atomic_write_bytes(path, lines.encode())
        elif isinstance(value, dict):
            write_json(path, value)
        else:
            raise TypeError(f"artifact {name}: cannot write a {type(value).__name__}")


def _runs_of(output_root: Path, config_hash_value: str, seed: int):
    for status_file in Path(output_root).glob(f"**/{RUN_STATUS}"):
        try:
            status = json.loads(status_file.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if status.get("config_hash") == config_hash_value and status.get("seed") == seed:
            yield status_file.parent, status


def find_resumable(output_root: Path, config_hash_value: str, seed: int) -> Optional[Path]:
    """The most recent unfinished run under ``output_root`` with this config hash and seed that
    no later run has resumed to completion (``resumed_by`` in its run.json)."""
    candidates = []
    for run_dir, status in _runs_of(output_root, config_hash_value, seed):
        last = run_dir / "last.pt"
        if status.get("status") != "finished" and not status.get("resumed_by") and last.is_file():
            candidates.append((last.stat().st_mtime, run_dir))
    return max(candidates)[1] if candidates else None


def completed_resumptions(output_root: Path, config_hash_value: str, seed: int) -> list[tuple[Path, str]]:
    """(interrupted run, the run that resumed it to completion) pairs, for the message that
    there is nothing left to resume."""
    return sorted((run_dir, str(status["resumed_by"])) for run_dir, status in _runs_of(output_root, config_hash_value, seed)
                  if status.get("resumed_by"))


def metrics_frame(results: dict) -> pd.DataFrame:
    """``metrics.csv``: one row per split and metric (``split, metric, value``), plus RelaImpr."""
    rows = [{"split": split, "metric": metric, "value": value}
            for split in ("valid", "test") for metric, value in results.get(split, {}).items()]
    rows += [{"split": "test", "metric": key, "value": value}
             for key, value in (results.get("relaimpr") or {}).items() if isinstance(value, (int, float))]
    return pd.DataFrame(rows, columns=["split", "metric", "value"])


def find_finished(roots, config_hash_value: str, seed: int) -> Optional[Path]:
    """A run directory under any of ``roots`` whose results.json has this config hash and seed
    (the most recent one), or None."""
    found = []
    for root in dict.fromkeys(Path(r).resolve() for r in roots):
        if not root.is_dir():
            continue
        for path in root.glob(f"**/{RESULTS}"):
            try:
                results = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if results.get("config_hash") == config_hash_value and results.get("seed") == seed:
                found.append((path.stat().st_mtime, path.parent))
    return max(found)[1] if found else None


METRIC_ORDER = ("auc", "logloss", "gauc", "recall", "ndcg", "hr", "mrr", "map", "precision")


def results_table(valid: dict, test: dict, k: int) -> pd.DataFrame:
    """Compact table: rows valid/test, columns the CTR metrics and the top-N metrics at ``k``
    (every K is in results.json)."""
    columns = []
    for name in METRIC_ORDER:
        for key in (name, f"{name}@{k}"):
            if key in valid or key in test:
                columns.append(key)
    frame = pd.DataFrame([{c: valid.get(c) for c in columns}, {c: test.get(c) for c in columns}], index=["valid", "test"])
    return frame


def format_table(frame: pd.DataFrame) -> str:
    def cell(value):
        if value is None or (isinstance(value, float) and value != value):
            return "undefined"
        return f"{value:.4f}"

    return frame.apply(lambda col: col.map(cell)).to_string()

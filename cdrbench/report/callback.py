"""Hydra callback run when a multirun ends (registered in ``conf/config.yaml``).

1. Lists every job of the sweep directory whose ``run.json`` says failed or interrupted (jobs
   never raise inside a multirun, so every job runs; see :func:`cdrbench.app.run`).
2. Writes the report of the sweep directory (``report.after_multirun``, default true).
3. Exits with code 1 if any job failed, so scripts and CI see the failure.

Kept light: nothing heavy is imported until the multirun has ended.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def failed_jobs(sweep_dir: Path) -> list[tuple[Path, str, str]]:
    """(job directory, status, error) of every job under ``sweep_dir`` that did not finish."""
    out = []
    for status_file in sorted(Path(sweep_dir).glob("**/run.json")):
        try:
            status = json.loads(status_file.read_text())
        except (OSError, json.JSONDecodeError):
            out.append((status_file.parent, "unreadable", "run.json cannot be read"))
            continue
        if status.get("status") in ("failed", "interrupted", "running"):
            out.append((status_file.parent, status["status"], status.get("error") or ""))
    return out


def _overrides(job_dir: Path) -> str:
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return ""
    import yaml

    return " ".join(yaml.safe_load(path.read_text()) or [])


class MultirunEnd(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        if config.get("report", {}).get("after_multirun", True):
            from cdrbench.errors import CdrbenchError
            from cdrbench.report.cli import write_report

            try:
                report = write_report(sweep_dir, log=lambda line: print(f"report: {line}"))
                for key, markdown in report.tables.items():
                    print(f"\n{key}:\n{markdown}")
                print(f"\nreport written to {report.out} (cdrbench report {sweep_dir} rewrites it)")
            except CdrbenchError as error:
                print(f"cdrbench: {error}", file=sys.stderr)
        failed = failed_jobs(sweep_dir)
        if failed:
            print(f"\ncdrbench: {len(failed)} job(s) of the multirun did not finish:", file=sys.stderr)
            for job_dir, status, error in failed:
                print(f"  {job_dir.name} [{status}] {_overrides(job_dir)}: {error}", file=sys.stderr)
            sys.exit(1)

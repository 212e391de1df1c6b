"""Fake run records (what the trainer writes) for report tests: results.json, config.yaml, run.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import yaml


def make_run(root: Path, name: str, method: str, data: str, seed: int, test: dict, valid: Optional[dict] = None,
             config: Optional[dict] = None, config_hash: Optional[str] = None, variant=None, best_epoch: int = 3) -> Path:
    run_dir = Path(root) / name
    run_dir.mkdir(parents=True)
    cfg = {"method": {"name": method, **({"variant": variant} if variant else {})}, "data": {"name": data},
           "seed": seed, "report": {"paper": None, "row": None}}
    for dotted, value in (config or {}).items():
        node = cfg
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    results = {
        "method": method, "data": data, "variant": variant, "profile": None, "seed": seed,
        "config_hash": config_hash or f"{method}-{variant}-{json.dumps(config or {}, sort_keys=True)}",
        "tag": None, "monitor": "auc", "best_epoch": best_epoch, "epochs_run": best_epoch + 3,
        "valid": valid or dict(test), "test": test, "seconds": {"total": 10.0, "per_epoch": 1.0},
        "memory": {"peak_rss_bytes": 2**30},
    }
    (run_dir / "results.json").write_text(json.dumps(results))
    (run_dir / "run.json").write_text(json.dumps({"status": "finished", "seed": seed}))
    return run_dir

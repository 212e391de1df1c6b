"""Every shipped data config composes, and the BiGNAS task configs run on files in the official
Amazon 2014 format (generated here: the real files cannot be downloaded in CI)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from cdrbench.app import build_readers, data_config, run_training
from cdrbench.config import compose
from cdrbench.data.prepare import prepare

CONF = Path(__file__).resolve().parents[2] / "conf" / "data"
# custom.yaml is the base of a user's own data (tests/data/test_own_data.py), not a data set
DATA_CONFIGS = sorted(p.stem for p in CONF.glob("*.yaml") if p.stem != "custom")
BIGNAS_TASKS = {
    "bo-mo": ("Books", "Movies_and_TV"),
    "bo-cd": ("Books", "CDs_and_Vinyl"),
    "bo-el": ("Books", "Electronics"),
    "bo-to": ("Books", "Toys_and_Games"),
    "cd-cl": ("CDs_and_Vinyl", "Clothing_Shoes_and_Jewelry"),
    "cd-ki": ("CDs_and_Vinyl", "Home_and_Kitchen"),
    "el-cl": ("Electronics", "Clothing_Shoes_and_Jewelry"),
}


@pytest.mark.parametrize("name", DATA_CONFIGS)
def test_data_config_composes_into_the_schema(name):
    cfg = compose([f"data={name}"])
    data_cfg = data_config(cfg)
    assert data_cfg.name == name
    readers = build_readers(data_cfg)  # every reader's arguments are valid
    assert set(readers) == set(data_cfg.domains)
    assert data_cfg.target not in data_cfg.source


def write_reviews(path: Path, users, rng: np.random.Generator, num_items: int, prefix: str) -> None:
    """Amazon 2014 5-core lines (reviewerID, asin, overall, unixReviewTime + extra fields)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as handle:
        for user in users:
            for item in rng.choice(num_items, size=rng.integers(3, 8), replace=False):  # 5-core files hold no repeats
                row = {
                    "reviewerID": user, "asin": f"{prefix}{item:04d}",
                    "reviewerName": "x", "helpful": [0, 0], "reviewText": "ok", "overall": float(rng.integers(1, 6)),
                    "summary": "s", "unixReviewTime": int(1_300_000_000 + rng.integers(0, 400) * 86400),
                    "reviewTime": "01 1, 2013",
                }
                handle.write(json.dumps(row) + "\n")


def make_amazon_root(root: Path, source: str, target: str) -> set:
    rng = np.random.default_rng(0)
    common = [f"A{i:05d}" for i in range(40)]
    write_reviews(root / "amazon2014" / f"reviews_{source}_5.json.gz", common + [f"S{i}" for i in range(10)], rng, 60, "s")
    write_reviews(root / "amazon2014" / f"reviews_{target}_5.json.gz", common + [f"T{i}" for i in range(10)], rng, 50, "t")
    return set(common)


@pytest.mark.parametrize("task", sorted(BIGNAS_TASKS))
def test_bignas_task_config_prepares_official_format(tmp_path, task):
    source, target = BIGNAS_TASKS[task]
    common = make_amazon_root(tmp_path, source, target)
    cfg = compose([f"data={task}", f"data.root={tmp_path}", "data.download=false"])
    data_cfg = data_config(cfg)
    data = prepare(data_cfg, build_readers(data_cfg), progress=False, log=lambda _: None)
    assert set(data.user_tokens) == common  # common users only (all have >= 3 target rows)
    t = data.interactions[data.target_domain]
    assert int((t.split == 1).sum()) == int((t.split == 2).sum()) == len(common)
    assert bool(((t.y == 1) == (t.rating > 3)).all())


def test_bignas_runs_end_to_end_on_an_amazon_task_config(tmp_path):
    make_amazon_root(tmp_path / "data", "CDs_and_Vinyl", "Home_and_Kitchen")
    cfg = compose([
        "method=bignas", "data=cd-ki", f"data.root={tmp_path / 'data'}", "data.download=false",
        "trainer.max_epochs=1", "trainer.progress=false", "method.train.batch_size=32",
        "method.bilevel.warmup_epochs=0", "method.bilevel.outer_every=1", "method.bilevel.meta_batch_size=16",
    ])
    results = run_training(cfg, tmp_path / "run")
    assert results["data"] == "cd-ki" and results["test"]["ctr_rows"] == 40
    assert 0.0 <= results["test"]["auc"] <= 1.0

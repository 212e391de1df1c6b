"""Typed schemas of the Hydra config, registered in Hydra's ConfigStore.

``conf/config.yaml`` lists ``cdrbench_schema`` first in its defaults, so every YAML file and every
command-line override is merged onto these dataclasses: an unknown key or a wrong type in
``data``, ``trainer`` or ``eval`` fails before any work starts, with Hydra's own message naming the
key. ``method``, ``backbone`` and ``optimizer`` are open dicts because their keys depend on the
chosen option; their objects are built with ``hydra.utils.instantiate``, whose constructors reject
unknown arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import os

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


@dataclass
class DomainConfig:
    """One domain of a data set: where its raw rows come from and its per-domain filters."""

    #: reader built with ``hydra.utils.instantiate`` (``_target_`` + constructor arguments)
    reader: Any = MISSING
    #: iterative k-core within this domain (users and items keep >= k interactions); 0 = off
    kcore: int = 0
    #: ``bipartite`` = iterate on users and items to a fixed point; ``user_only`` = one pass on users
    kcore_mode: str = "bipartite"
    #: one-pass filters applied after the k-core (0 = off)
    min_user_interactions: int = 0
    min_item_interactions: int = 0


@dataclass
class SplitConfig:
    """How the target domain is split (source domains are training data only)."""

    #: leave_last_two (BiGNAS/BIAO) | ratio (per-user random, RecBole rounding, HAGO)
    #: | holdout (random test share, then valid share of the rest; PCRec) | temporal (global)
    #: | given (the reader's own split column)
    kind: str = "leave_last_two"
    #: train/valid/test shares for ``ratio`` and ``temporal``
    ratios: List[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    #: test share and the share of the remaining rows moved to valid, for ``holdout``
    test: float = 0.2
    valid_of_train: float = 0.1
    #: ``user`` = split every user's rows; ``none`` = one global random split (holdout)
    group_by: str = "user"
    #: seed of the random split (the split is saved and shared by all model seeds)
    seed: int = 2022
    #: leave_last_two: drop every source row at or after the user's second-to-last target time
    leakage_cut: bool = True


@dataclass
class DataConfig:
    #: data set key (folder-independent), used in run directories and cache names
    name: str = MISSING
    #: where raw files live: ``<root>/<folder>/...``; ``~`` and env vars are expanded
    root: str = "${oc.env:CDRBENCH_DATA,'~/.cache/cdrbench'}"
    #: prepared-data cache; null = ``<root>/.cdrbench-prepared``
    cache_dir: Optional[str] = None
    #: allow downloading missing raw files from their official URLs
    download: bool = True
    #: domain key -> reader and per-domain filters
    domains: Dict[str, DomainConfig] = MISSING
    #: source domain keys (in order) and the target domain key
    source: List[str] = MISSING
    target: str = MISSING
    #: repeated (user, item) pairs: keep (all rows) | first (earliest ts) | last (latest ts)
    dedup: str = "keep"
    #: keep only rows with rating >= min_rating (implicit positives); null = keep all
    min_rating: Optional[float] = None
    #: click label y = rating > label_threshold (BiGNAS: 3); null = no labels (implicit data)
    label_threshold: Optional[float] = None
    #: users kept: all | common (present in every domain)
    users: str = "all"
    #: drop users with fewer target rows (from every domain); BiGNAS needs 2 (valid + test)
    min_target_interactions: int = 0
    #: time order of rows: stable (ties keep file order) | unstable_refcode (quicksort, audit only)
    sort: str = "stable"
    split: SplitConfig = field(default_factory=SplitConfig)
    #: train on the source domains too: null = the method's default (single-domain baselines:
    #: target only; cross-domain methods: all domains); true/false forces it. Not part of the
    #: prepared data (a view), so it never invalidates the prepare cache.
    use_source: Optional[bool] = None
    #: paper statistics to compare with: domain -> {users, items, interactions}
    expected: Optional[Dict[str, Dict[str, int]]] = None


@dataclass
class TrainerConfig:
    max_epochs: int = 100
    #: evaluate on valid every N epochs (and after the last epoch)
    eval_every: int = 1
    #: stop after this many evaluations without a strict improvement of ``monitor``
    patience: int = 10
    #: no early stop before this epoch (LightGCN's validation dips early)
    min_epochs: int = 0
    #: validation metric for model selection, e.g. auc | logloss | ndcg@20 | recall@20;
    #: null = auc when eval.tasks starts with ctr, else ndcg@20 (ndcg at the largest K <= 20)
    monitor: Optional[str] = None
    #: continue an interrupted run with the same config and seed (the latest unfinished one under
    #: output_root, or trainer.resume_from) from its last checkpoint
    resume: bool = False
    #: run directory to resume from (implies resume)
    resume_from: Optional[str] = None
    #: keep ``last.pt`` after every epoch (needed for resume)
    save_last: bool = True
    #: tqdm bars (also off automatically when stderr is not a terminal)
    progress: bool = True
    #: auto (CUDA when available) | cpu | cuda | cuda:N
    device: str = "auto"
    #: torch.use_deterministic_algorithms(True, warn_only=True) where it changes results: on CUDA,
    #: and on CPU with num_threads > 1 (with one CPU thread results are bit-identical without it)
    deterministic: bool = True
    #: torch intra-op threads (torch.set_num_threads); 0 = leave torch's default (one per core,
    #: or OMP_NUM_THREADS). Default 1: on a shared or loaded machine more threads than free cores
    #: make runs several times slower (README, "CPU threads")
    num_threads: int = 1
    #: reuse pre-trained weights (HAGO, PCRec) from the content-hashed artifact cache
    artifact_cache: bool = True
    #: artifact cache directory; null = $XDG_CACHE_HOME/cdrbench/artifacts (~/.cache/...)
    artifact_dir: Optional[str] = None


@dataclass
class EvalConfig:
    #: which evaluations to run: any of ctr (labelled rows) and topn (full ranking)
    tasks: List[str] = field(default_factory=lambda: ["topn"])
    ks: List[int] = field(default_factory=lambda: [10, 20, 50])
    #: MAP@K denominator: min_k_rel | rel | k | hits
    map_denominator: str = "min_k_rel"
    #: top-N user chunk size; null = as many users as fit into max_chunk_bytes of scores
    chunk_size: Optional[int] = None
    max_chunk_bytes: int = 1 << 30
    #: CTR: report GAUC too (undefined on leave-one-out splits)
    gauc: bool = False
    #: CTR prediction batch size
    batch_size: int = 65536
    #: run directory of a baseline run: results.json then also holds RelaImpr (AUC, LogLoss)
    #: of this run's test metrics against that run's (BiGNAS paper formulas)
    baseline_run: Optional[str] = None


@dataclass
class Config:
    data: DataConfig = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    method: Any = MISSING
    backbone: Any = None
    optimizer: Any = None
    #: prepare | train
    stage: str = "train"
    seed: int = 0
    #: free-form tag stored in results.json
    tag: Optional[str] = None
    #: where run directories go (hydra.run.dir / hydra.sweep.dir are built from it)
    output_root: str = "outputs"


def _by_profile(profile: str, choices) -> Any:
    if profile not in choices:
        raise ValueError(f"method.profile={profile!r} is not one of {sorted(choices)}")
    value = choices[profile]
    # a container must come back as a config node, or in-place resolution rejects it
    return OmegaConf.create(value) if isinstance(value, (list, dict)) else value


def register_configs() -> None:
    """Register the schema and cdrbench's resolvers (idempotent)."""
    ConfigStore.instance().store(name="cdrbench_schema", node=Config)
    # per-process id used in run directory names, so concurrent runs never share a directory
    if not OmegaConf.has_resolver("cdrbench.pid"):
        OmegaConf.register_new_resolver("cdrbench.pid", lambda: os.getpid())
    # method.profile-dependent values: ${by_profile:${method.profile},{paper: X, refcode: Y}}
    if not OmegaConf.has_resolver("by_profile"):
        OmegaConf.register_new_resolver("by_profile", _by_profile)
    # baselines train with BCE on click labels when only CTR is evaluated, else with BPR
    if not OmegaConf.has_resolver("cdrbench.default_loss"):
        OmegaConf.register_new_resolver(
            "cdrbench.default_loss", lambda tasks: "bce" if list(tasks) == ["ctr"] else "bpr"
        )


def compose(overrides: Optional[List[str]] = None) -> DictConfig:
    """The config ``python -m cdrbench <overrides>`` would run with (for scripts and tests)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    register_configs()
    with initialize_config_module(config_module="cdrbench.conf", version_base=None):
        return hydra_compose(config_name="config", overrides=list(overrides or []))

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
    #: | given (the user's own split: the target reader gives each row's split, e.g.
    #: ``cdrbench.data.sources.given.GivenSplit`` over train/valid/test files of any reader).
    kind: str = "leave_last_two"
    #: what is split: ``pair`` = every row of one (user, item) pair goes to the split of its first
    #: row, so a pair repeated under ``dedup=keep`` is never in train and valid/test at once
    #: (``given`` refuses files that put one pair in two splits); ``row`` = rows are split one by
    #: one, as RecBole and the HAGO reference code do (a repeated pair can be an easy hit)
    unit: str = "pair"
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
    #: prepared-data cache; null = ``$XDG_CACHE_HOME/cdrbench/prepared`` (``~/.cache/...``), so a
    #: user's data folder is only ever read
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
    #: [lowest, highest] valid rating: a row outside is an error naming the file and line;
    #: null = no check (the prepare report shows each domain's rating range)
    rating_range: Optional[List[float]] = None
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
    #: how the source domains are filtered: per_domain (each its own k-core, then merged; HAGO's
    #: paper) | merged (the sources concatenated and k-cored as one data set; HAGO's code)
    source_filter: str = "per_domain"
    #: item tokens across domains (items of different domains are never one item in cdrbench):
    #: null = raw tokens, not checked; false = raw tokens, and preparation stops if a token occurs
    #: in two domains (code that matches raw tokens, like HAGO's, would merge them: choose
    #: explicitly); true = tokens prefixed with their domain ("movie:1234")
    namespace_item_tokens: Optional[bool] = None


@dataclass
class TrainerConfig:
    max_epochs: int = 100
    #: evaluate on valid every N epochs (and after the last epoch)
    eval_every: int = 1
    #: stop after this many evaluations without a strict improvement of ``monitor``
    patience: int = 10
    #: no early stop before this epoch (LightGCN's validation dips early)
    min_epochs: int = 0
    #: strict = only a better value improves, stop after ``patience`` evaluations without one;
    #: recbole = RecBole's early_stopping(): a value >= the best improves (a tie moves the best
    #: to the later epoch) and training stops after *more than* ``patience`` (= stopping_step)
    stopping_rule: str = "strict"
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
    #: skip a job whose results.json already exists (under output_root or its sweep directory)
    #: for the same config hash and seed, so a requeued sweep finishes instead of starting over;
    #: null = in multiruns only
    skip_finished: Optional[bool] = None


@dataclass
class EvalConfig:
    #: which evaluations to run: any of ctr (labelled rows) and topn (full ranking)
    tasks: List[str] = field(default_factory=lambda: ["topn"])
    ks: List[int] = field(default_factory=lambda: [10, 20, 50])
    #: MAP@K denominator: min_k_rel | rel | k | hits
    map_denominator: str = "min_k_rel"
    #: top-N users ranked at once; null = as many as fit into ``max_chunk_bytes``
    chunk_size: Optional[int] = None
    #: memory budget of one ranking chunk: every [users x items] working tensor of the chunk
    #: (scores, their copy, tie keys, positive mask) counted, see ``eval.topn.BYTES_PER_CELL``
    max_chunk_bytes: int = 1 << 30
    #: sampled-negative protocol: 0 = full ranking over every target item (default); N > 0 =
    #: each valid/test row is ranked against N items the user never interacted with (train,
    #: valid or test), drawn once with ``negatives_seed``, saved beside the prepared data and
    #: reused by every method and run (leave-one-out HR/NDCG@K over 1 + N candidates)
    negatives: int = 0
    negatives_seed: int = 0
    #: CTR: report GAUC too (undefined on leave-one-out splits)
    gauc: bool = False
    #: CTR prediction batch size
    batch_size: int = 65536
    #: run directory of a baseline run: results.json then also holds RelaImpr (AUC, LogLoss)
    #: of this run's test metrics against that run's (BiGNAS paper formulas)
    baseline_run: Optional[str] = None


@dataclass
class ReportConfig:
    """How ``cdrbench report`` shows this run (never part of the config hash)."""

    #: the paper table this run reproduces, ``<paper>/<table>`` of cdrbench/report/paper_numbers/
    #: (e.g. bignas/table3): its reported numbers appear beside ours; null = none
    paper: Optional[str] = None
    #: label of this run's table row; null = the method name plus the config values that tell
    #: its configurations apart (e.g. ``bignas (method.variant=no_impo)``)
    row: Optional[str] = None
    #: write the report of the sweep directory when a multirun ends (Hydra callback)
    after_multirun: bool = True


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
    report: ReportConfig = field(default_factory=ReportConfig)
    #: experiment tracker (conf/logger/: csv | mlflow | tensorboard), built with instantiate
    logger: Any = None
    #: Optuna search of ``cdrbench tune`` (conf/hparams_search/<method>.yaml); null = none
    hparams_search: Any = None


def _by_profile(profile: str, choices) -> Any:
    if profile not in choices:
        raise ValueError(f"method.profile={profile!r} is not one of {sorted(choices)}")
    value = choices[profile]
    # a container must come back as a config node, or in-place resolution rejects it
    return OmegaConf.create(value) if isinstance(value, (list, dict)) else value


def _stage_dir(stage: str, prepare_dir: str, run_dir: str) -> str:
    """``hydra.run.dir``: ``stage=prepare`` writes its tables to one folder per data set."""
    return prepare_dir if stage == "prepare" else run_dir


def _by_key(key, choices, default) -> Any:
    """``${cdrbench.by_key:${method.variant},{v1: X, v2: Y},Z}``: the value ``choices`` gives ``key``,
    ``Z`` for any other key (a method variant's options, a per-method value in a preset)."""
    value = choices[key] if choices is not None and key in choices else default
    return OmegaConf.create(value) if isinstance(value, (list, dict)) else value


def register_configs() -> None:
    """Register the schema and cdrbench's resolvers (idempotent)."""
    ConfigStore.instance().store(name="cdrbench_schema", node=Config)
    # per-process id used in run directory names, so concurrent runs never share a directory
    if not OmegaConf.has_resolver("cdrbench.pid"):
        OmegaConf.register_new_resolver("cdrbench.pid", lambda: os.getpid())
    if not OmegaConf.has_resolver("cdrbench.stage_dir"):
        OmegaConf.register_new_resolver("cdrbench.stage_dir", _stage_dir)
    # method.profile-dependent values: ${by_profile:${method.profile},{paper: X, refcode: Y}}
    if not OmegaConf.has_resolver("by_profile"):
        OmegaConf.register_new_resolver("by_profile", _by_profile)
    # a value chosen by another value (a method variant's options, a per-method value in a preset):
    # ${cdrbench.by_key:${method.name},{bignas: 20},100} -> 20 for bignas, 100 otherwise
    if not OmegaConf.has_resolver("cdrbench.by_key"):
        OmegaConf.register_new_resolver("cdrbench.by_key", _by_key)
    # ceil(a / b) of two integers, e.g. a patience in epochs turned into evaluations
    if not OmegaConf.has_resolver("cdrbench.ceil_div"):
        OmegaConf.register_new_resolver("cdrbench.ceil_div", lambda a, b: -(-int(a) // int(b)))
    # baselines train with BCE on click labels when only CTR is evaluated, else with BPR
    if not OmegaConf.has_resolver("cdrbench.default_loss"):
        OmegaConf.register_new_resolver(
            "cdrbench.default_loss", lambda tasks: "bce" if list(tasks) == ["ctr"] else "bpr"
        )
    # ${cdrbench.ctr_only:${eval.tasks},A,B}: A when only CTR is evaluated, else B (the
    # cross-domain baselines train on the click labels then, else on sampled negatives)
    if not OmegaConf.has_resolver("cdrbench.ctr_only"):
        OmegaConf.register_new_resolver(
            "cdrbench.ctr_only", lambda tasks, if_ctr, otherwise: if_ctr if list(tasks) == ["ctr"] else otherwise
        )


def compose(overrides: Optional[List[str]] = None, config_dir: Optional[str] = None) -> DictConfig:
    """The config ``python -m cdrbench [--config-dir DIR] <overrides>`` would run with (for scripts
    and tests)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    register_configs()
    extra = [f"hydra.searchpath=[file://{os.path.abspath(config_dir)}]"] if config_dir else []
    with initialize_config_module(config_module="cdrbench.conf", version_base=None):
        return hydra_compose(config_name="config", overrides=[*extra, *(overrides or [])])

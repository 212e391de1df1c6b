"""Every check that needs only the composed config: no data, no torch, milliseconds.

The entry point runs :func:`check_config` before it imports the heavy modules, so a bad value
costs about a second (Hydra's start) instead of the 7-10 s of importing torch and PyG. Checks that
need a method's own options run next, by building the method object before any data is prepared
(constructors take only options, see :func:`cdrbench.app.build_method`); checks that need the data
run after preparation and before training.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from pathlib import Path
from typing import get_type_hints

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cdrbench.config import Config
from cdrbench.errors import ConfigError
from cdrbench.eval.names import MAP_DENOMINATORS, TASKS, monitor_choices
from cdrbench.methods.options import check_choice, check_choices

STAGES = ("prepare", "train")
SPLIT_KINDS = ("leave_last_two", "ratio", "holdout", "temporal", "given")
DEDUP_POLICIES = ("keep", "first", "last")
USER_POLICIES = ("all", "common")
SORT_POLICIES = ("stable", "unstable_refcode")
KCORE_MODES = ("bipartite", "user_only")
SOURCE_FILTERS = ("per_domain", "merged")
GROUP_BY = ("user", "none")
SPLIT_UNITS = ("pair", "row")
#: (cdrbench.train.trainer imports torch: the names are kept here, before any heavy import)
STOPPING_RULES = ("strict", "recbole")
#: data keys every data config must set (``conf/data/custom.yaml`` leaves them to the user)
REQUIRED_DATA_KEYS = ("name", "domains", "source", "target")


def check_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` naming the key for the first bad value of ``cfg``."""
    try:
        check_schema_keys(cfg)
        if cfg.stage not in STAGES:
            raise ConfigError(f"stage={cfg.stage!r} is not one of {list(STAGES)}")
        check_required_data(cfg.data)
        check_data_options(cfg.data)
        check_data_root(cfg.data.root)
        check_trainer(cfg.trainer)
        check_optimizer(cfg.get("optimizer"))
        check_eval(cfg.eval)
        check_monitor(cfg.trainer.monitor, cfg.eval)
        check_baseline_run(cfg.eval)
    except OmegaConfBaseException as error:  # e.g. a resolver rejecting method.profile
        raise ConfigError(_omegaconf_message(error)) from None


def _omegaconf_message(error: OmegaConfBaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    keep = [line for line in lines if not line.startswith(("reference_type", "object_type"))]
    return "; ".join(keep)


# ---------------------------------------------------------------------------- schema
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
        if OmegaConf.is_missing(node, key):
            continue
        value, expected = node[key], hints[key]
        if not isinstance(value, DictConfig):
            continue
        if dataclasses.is_dataclass(expected):
            _check_node(value, expected, f"{path}.{key}")
        elif typing.get_origin(expected) is dict and dataclasses.is_dataclass(typing.get_args(expected)[1]):
            for sub_key in value.keys():
                _check_node(value[sub_key], typing.get_args(expected)[1], f"{path}.{key}.{sub_key}")


# ---------------------------------------------------------------------------- data
def check_required_data(data) -> None:
    """A data config that leaves name/domains/source/target unset is a base (``data=custom``)."""
    missing = [key for key in REQUIRED_DATA_KEYS if OmegaConf.is_missing(data, key)] if isinstance(data, DictConfig) else []
    if missing:
        raise ConfigError(
            f"data: {', '.join(missing)} not set. data=custom is a base for your own data, not a data set: "
            "write <your config dir>/data/<name>.yaml with `defaults: [custom, _self_]` and the keys "
            "name, domains (each with a reader), source and target, then run "
            "`python -m cdrbench --config-dir <your config dir> data=<name>` (README: 'Your own data')"
        )


def check_data_options(cfg) -> None:
    """Fail early, naming the key, on inconsistent data options (a DataConfig or its DictConfig)."""
    if not cfg.domains:
        raise ConfigError("data.domains is empty")
    if cfg.target not in cfg.domains:
        raise ConfigError(f"data.target={cfg.target!r} is not a key of data.domains ({sorted(cfg.domains)})")
    for s in cfg.source:
        if s not in cfg.domains:
            raise ConfigError(f"data.source names {s!r}, which is not a key of data.domains ({sorted(cfg.domains)})")
        if s == cfg.target:
            raise ConfigError(f"data.source contains the target domain {s!r}; source and target must differ")
    if len(set(cfg.source)) != len(cfg.source):
        raise ConfigError(f"data.source lists a domain twice: {list(cfg.source)}")
    unused = set(cfg.domains) - set(cfg.source) - {cfg.target}
    if unused:
        raise ConfigError(f"data.domains has domains that are neither source nor target: {sorted(unused)}")
    if cfg.source_filter == "merged" and len(cfg.source) > 1:
        keys = ("kcore", "kcore_mode", "min_user_interactions", "min_item_interactions")
        specs = {d: {k: getattr(cfg.domains[d], k) for k in keys} for d in cfg.source}
        if len({json.dumps(v, sort_keys=True) for v in specs.values()}) > 1:
            raise ConfigError(
                "data.source_filter=merged filters the source domains as one data set: their kcore, kcore_mode, "
                f"min_user_interactions and min_item_interactions must agree (data.domains: {specs})"
            )
    split = cfg.split
    checks = [
        ("data.source_filter", cfg.source_filter, SOURCE_FILTERS),
        ("data.dedup", cfg.dedup, DEDUP_POLICIES),
        ("data.users", cfg.users, USER_POLICIES),
        ("data.sort", cfg.sort, SORT_POLICIES),
        ("data.split.kind", split.kind, SPLIT_KINDS),
        ("data.split.group_by", split.group_by, GROUP_BY),
        ("data.split.unit", split.unit, SPLIT_UNITS),
    ]
    checks += [(f"data.domains.{d}.kcore_mode", spec.kcore_mode, KCORE_MODES) for d, spec in cfg.domains.items()]
    check_choices(checks)
    for domain, spec in cfg.domains.items():
        for key in ("kcore", "min_user_interactions", "min_item_interactions"):
            _at_least(f"data.domains.{domain}.{key}", getattr(spec, key), 0)
    _at_least("data.min_target_interactions", cfg.min_target_interactions, 0)
    if cfg.rating_range is not None:
        bounds = list(cfg.rating_range)
        if len(bounds) != 2 or not bounds[0] <= bounds[1]:
            raise ConfigError(f"data.rating_range={bounds} must be [lowest, highest] with lowest <= highest")
    if split.kind in ("ratio", "temporal"):
        ratios = list(split.ratios)
        if len(ratios) != 3 or any(r < 0 for r in ratios):
            raise ConfigError(f"data.split.ratios={ratios} must be three shares >= 0 (train, valid, test)")
        if not math.isclose(sum(ratios), 1.0, abs_tol=1e-6):
            raise ConfigError(f"data.split.ratios={ratios} sums to {sum(ratios):g}; the three shares must sum to 1")
        if ratios[0] <= 0:
            raise ConfigError(f"data.split.ratios={ratios}: the train share must be > 0")
    if split.kind == "holdout":
        if not 0 < split.test < 1:
            raise ConfigError(f"data.split.test={split.test} must be in (0, 1)")
        if not 0 <= split.valid_of_train < 1:
            raise ConfigError(f"data.split.valid_of_train={split.valid_of_train} must be in [0, 1)")


def resolve_path(path: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(str(path)))).resolve()


def check_data_root(root: str) -> None:
    """A data root that exists must be a directory (a missing one is checked where the readers
    say which files they need: generated data needs none)."""
    path = resolve_path(root)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"data.root={root!r} is a file ({path}), not a directory holding the data folders")


# ---------------------------------------------------------------------------- training
def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _at_least(key: str, value, lowest) -> None:
    if not _is_int(value) or value < lowest:
        raise ConfigError(f"{key}={value!r} must be an integer >= {lowest}")


def check_trainer(trainer) -> None:
    _at_least("trainer.max_epochs", trainer.max_epochs, 0)
    _at_least("trainer.patience", trainer.patience, 1)
    _at_least("trainer.eval_every", trainer.eval_every, 1)
    _at_least("trainer.min_epochs", trainer.min_epochs, 0)
    check_choice("trainer.stopping_rule", trainer.stopping_rule, STOPPING_RULES)


def check_optimizer(optimizer) -> None:
    """``optimizer.lr`` > 0 and ``optimizer.weight_decay`` >= 0 where the optimiser has them (the
    remaining arguments are checked by building the optimiser before any data is prepared)."""
    if not isinstance(optimizer, DictConfig):
        return
    lr = optimizer.get("lr")
    if lr is not None and (not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0):
        raise ConfigError(f"optimizer.lr={lr!r} must be a number > 0")
    decay = optimizer.get("weight_decay")
    if decay is not None and (not isinstance(decay, (int, float)) or isinstance(decay, bool) or decay < 0):
        raise ConfigError(f"optimizer.weight_decay={decay!r} must be a number >= 0")


def check_eval(eval_cfg) -> None:
    tasks = list(eval_cfg.tasks)
    if not tasks or any(t not in TASKS for t in tasks) or len(set(tasks)) != len(tasks):
        raise ConfigError(f"eval.tasks={tasks} must be a non-empty list of distinct tasks from {list(TASKS)}")
    ks = list(eval_cfg.ks)
    if not ks or any(not _is_int(k) or k < 1 for k in ks):
        raise ConfigError(f"eval.ks={ks} must be a non-empty list of integers >= 1 (cut-offs K of the top-N metrics)")
    if eval_cfg.map_denominator not in MAP_DENOMINATORS:
        raise ConfigError(f"eval.map_denominator={eval_cfg.map_denominator!r} is not one of {list(MAP_DENOMINATORS)}")
    if eval_cfg.chunk_size is not None:
        _at_least("eval.chunk_size", eval_cfg.chunk_size, 1)
    _at_least("eval.max_chunk_bytes", eval_cfg.max_chunk_bytes, 1)
    _at_least("eval.batch_size", eval_cfg.batch_size, 1)
    _at_least("eval.negatives", eval_cfg.negatives, 0)
    if eval_cfg.negatives and "topn" not in tasks:
        raise ConfigError(f"eval.negatives={eval_cfg.negatives} ranks sampled candidates, a top-N protocol: eval.tasks must include topn")


def check_monitor(monitor, eval_cfg) -> None:
    if monitor is None:
        return
    choices = monitor_choices(list(eval_cfg.tasks), list(eval_cfg.ks), bool(eval_cfg.gauc))
    if monitor not in choices:
        raise ConfigError(
            f"trainer.monitor={monitor!r} is not evaluated with eval.tasks={list(eval_cfg.tasks)} and "
            f"eval.ks={list(eval_cfg.ks)}; choose one of {choices}"
        )


def check_baseline_run(eval_cfg) -> None:
    """``eval.baseline_run`` must be a finished CTR run: checked before any work, not after test."""
    if not eval_cfg.baseline_run:
        return
    if "ctr" not in eval_cfg.tasks:
        raise ConfigError("eval.baseline_run reports RelaImpr of AUC and LogLoss: eval.tasks must include ctr")
    path = resolve_path(eval_cfg.baseline_run) / "results.json"
    if not path.is_file():
        raise ConfigError(f"eval.baseline_run={eval_cfg.baseline_run}: no results.json there ({path} is not a finished run)")
    try:
        test = json.loads(path.read_text()).get("test", {})
    except (OSError, ValueError, AttributeError) as error:
        raise ConfigError(f"eval.baseline_run: {path} is not a readable results.json ({error})") from None
    missing = [m for m in ("auc", "logloss") if test.get(m) is None]
    if missing:
        raise ConfigError(f"eval.baseline_run: {path} has no test {' or '.join(missing)} (not a CTR run, or undefined there)")

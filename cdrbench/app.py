"""Turns the composed config into objects and runs a stage. Nothing below this module reads the
config: data options become a :class:`~cdrbench.config.DataConfig` object, readers, models,
methods and optimisers are built with ``hydra.utils.instantiate``."""

from __future__ import annotations

import dataclasses
import typing
from typing import get_type_hints

import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cdrbench.config import Config, DataConfig
from cdrbench.data.dataset import CrossDomainData
from cdrbench.data.prepare import compare_with_expected, prepare
from cdrbench.errors import ConfigError

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
        print("\nagainst the paper's statistics (data.expected):")
        print(comparison.to_string(index=False))
        if not comparison["match"].all():
            print("WARNING: prepared counts differ from the paper's; see the table above")
    return data


def run(cfg: DictConfig):
    check_schema_keys(cfg)
    if cfg.stage not in STAGES:
        raise ConfigError(f"stage={cfg.stage!r} is not one of {list(STAGES)}")
    if cfg.stage == "prepare":
        return run_prepare(cfg)
    from cdrbench.train.run import run_training

    return run_training(cfg)

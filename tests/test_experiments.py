"""Every experiment= preset composes for every swept combination, names only data configs that
exist, and every paper table a preset names exists; every paper row's match names config values
a run can have. Also the hparams_search= spaces."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from cdrbench.config import register_configs
from cdrbench.report.papers import available_tables

CONF = Path(__file__).resolve().parents[1] / "conf"
PRESETS = sorted(p.relative_to(CONF / "experiment").with_suffix("").as_posix() for p in (CONF / "experiment").rglob("*.yaml"))
SEARCHES = sorted(p.stem for p in (CONF / "hparams_search").glob("[!_]*.yaml"))


def _compose(overrides, hydra=False):
    register_configs()
    with initialize_config_module(config_module="cdrbench.conf", version_base=None):
        return compose(config_name="config", overrides=overrides, return_hydra_config=hydra)


def _choices(value: str) -> list[str]:
    return [v.strip() for v in str(value).split(",")]


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_for_every_swept_data_and_method(preset):
    cfg = _compose([f"experiment={preset}"], hydra=True)
    params = dict(cfg.hydra.sweeper.params)
    assert "seed" in params and len(_choices(params["seed"])) >= 3, "presets pin their seeds"
    data_names = _choices(params.get("data", cfg.data.name))
    for name in data_names:
        assert (CONF / "data" / f"{name}.yaml").is_file(), f"{preset}: data={name} has no conf/data/{name}.yaml"
    if cfg.report.paper:
        assert cfg.report.paper in available_tables()
    swept = {k: _choices(v) for k, v in params.items() if k != "seed"}
    # every swept value once (the others at their first value): composition is per value
    jobs = {tuple((k, vs[0]) for k, vs in swept.items())}
    for key, values in swept.items():
        for value in values[1:]:
            jobs.add(tuple((k, value if k == key else vs[0]) for k, vs in swept.items()))
    for job_values in sorted(jobs):
        chosen = dict(job_values)
        job = _compose([f"experiment={preset}", *(f"{k}={v}" for k, v in job_values), "seed=0"])
        resolved = OmegaConf.to_container(job, resolve=True)  # every interpolation resolves
        assert resolved["data"]["name"] == chosen.get("data", cfg.data.name)
        assert resolved["method"]["name"] == chosen.get("method", resolved["method"]["name"])


def test_paper_numbers_exist_for_every_paper_table_of_the_issue():
    tables = set(available_tables())
    assert {"bignas/table3", "bignas/figure2", "hago/table1", "hago/table3", "hago/table4", "hago/table5",
            "hago/figure3", "pcrec/table2", "pcrec/table3", "pcrec/table4"} <= tables


def _paper_rows():
    """(table key, row name, match) of every paper row that names our runs."""
    from cdrbench.report.papers import load_paper_table

    rows = []
    for key in available_tables():
        for name, spec in load_paper_table(key).rows.items():
            if spec.get("match"):
                rows.append(pytest.param(key, name, spec["match"], id=f"{key}:{name}"))
    return rows


@pytest.mark.parametrize("table, row, match", _paper_rows())
def test_paper_row_match_names_config_values_a_run_can_have(table, row, match):
    """A row's ``match`` sets keys the method's config has, to values its constructor accepts:
    a misspelt key or a variant the method does not define would leave the row without runs."""
    from cdrbench.app import build_method

    values = {("method.variant" if k == "variant" else k): v for k, v in match.items() if k != "method"}
    cfg = _compose([f"method={match['method']}"])
    for key in values:
        assert OmegaConf.select(cfg, key) is not None, f"{table} {row}: {key} is not a key of method={match['method']}"
    cfg = _compose([f"method={match['method']}", *(f"{k}={v}" for k, v in values.items())])
    for key, value in values.items():
        assert str(OmegaConf.select(cfg, key)) == str(value)
    from cdrbench.errors import ConfigError

    try:
        build_method(cfg)  # the constructor checks the option values (variant names, encoder names, ...)
    except ConfigError as error:  # a row may need more options (bignas manual: arch.manual_op) ...
        for key, value in values.items():  # ... but none of its own values may be refused
            assert f"{key}={value!r} is not one of" not in str(error), f"{table} {row}: {error}"


@pytest.mark.parametrize("search", SEARCHES)
def test_search_space_parses(search):
    pytest.importorskip("optuna")
    from cdrbench.sweeps.tune import distribution

    cfg = _compose([f"hparams_search={search}"])
    assert cfg.method.name == search
    for key, expression in cfg.hparams_search.params.items():
        assert OmegaConf.select(cfg, key) is not None, f"{search}: {key} is not a key of the composed config"
        distribution(key, expression)

"""PCRec as a method: variants, initialisation modes, the encoder cache, resume, scoring, bad
input (spec pcrec.md §4-§7, §10.6-10.9)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cdrbench.app import build_method, build_readers, data_config, run_training
from cdrbench.config import compose
from cdrbench.data.dataset import CrossDomainData, Interactions
from cdrbench.data.prepare import prepare
from cdrbench.errors import ConfigError, DataFileError
from cdrbench.eval.evaluator import Evaluator
from cdrbench.methods.base import Phase
from cdrbench.methods.pcrec.method import PCRec
from cdrbench.train.artifact_cache import ArtifactCache, artifact_key
from cdrbench.train.trainer import LAST, Trainer, load_checkpoint

TINY_METHOD = [
    "method=pcrec",
    "method.rwr.min_budget=16",
    "method.rwr.max_subgraph_nodes=32",
    "method.pretrain.batch_size=8",
    "method.pretrain.num_workers=0",
    "method.moco.queue_size=16",
    "method.encoder.hidden=16",
    "method.finetune.dim=16",
    "method.encoder.num_gin_layers=2",
    "method.features.pos_dim=8",
    "method.features.deg_dim=4",
    "method.init.batch_size=64",
]
TINY_DATA = [
    "data=synthetic",
    "data.domains.src.reader.num_users=40",
    "data.domains.tgt.reader.num_users=40",
    "data.domains.src.reader.num_items=30",
    "data.domains.tgt.reader.num_items=25",
    "data.domains.src.reader.interactions_per_user=6",
    "data.domains.tgt.reader.interactions_per_user=6",
    "trainer.progress=false",
]


def method_from(*overrides: str) -> PCRec:
    _, method = build_method(compose([*TINY_METHOD, *overrides]))
    method.log = lambda _: None
    return method


def rows(pairs, splits=None) -> Interactions:
    n = len(pairs)
    return Interactions(
        user=torch.tensor([u for u, _ in pairs]), item=torch.tensor([i for _, i in pairs]),
        rating=torch.full((n,), float("nan")), ts=torch.full((n,), float("nan"), dtype=torch.float64),
        split=torch.tensor(splits if splits is not None else [0] * n, dtype=torch.int8),
    )


def toy_data(common: bool = True, source_edges: bool = True) -> CrossDomainData:
    """Users 0, 1 common; 2 source-only; 3, 4 target-only. Target item 5 occurs only in test
    (an isolated node of the target-train graph)."""
    source = [(0, 0), (0, 1), (1, 1), (1, 2), (2, 2), (2, 3), (0, 3)] if source_edges else []
    if not common:
        source = [(2, 0), (2, 1), (2, 2), (2, 3)]
    target = [(0, 0), (0, 1), (1, 1), (1, 2), (3, 2), (3, 3), (4, 3), (4, 4), (0, 5), (3, 0)]
    splits = [0, 0, 0, 0, 0, 0, 0, 0, 2, 2]
    return CrossDomainData(
        name="toy", source_domains=["s"], target_domain="t", user_tokens=np.array([f"u{i}" for i in range(5)]),
        item_tokens={"s": np.array([f"s{i}" for i in range(4)]), "t": np.array([f"t{i}" for i in range(6)])},
        interactions={"s": rows(source), "t": rows(target, splits)},
    )


# ---------------------------------------------------------------------------- variants
@pytest.mark.parametrize("variant, expected", [
    ("pcrec", dict(r=2, mode="all_pm", model="mf", layers=0, pre_only=False)),
    ("pre_only", dict(r=2, mode="all_pm", model="mf", layers=0, pre_only=True)),
    ("hop2", dict(r=2, mode="all_pm", model="mf", layers=0, pre_only=True)),
    ("hop3", dict(r=3, mode="all_pm", model="mf", layers=0, pre_only=True)),
    ("l1", dict(r=2, mode="all_pm", model="lightgcn", layers=1, pre_only=False)),
    ("l3", dict(r=2, mode="all_pm", model="lightgcn", layers=3, pre_only=False)),
    ("cu_pe", dict(r=2, mode="cu_pe", model="mf", layers=0, pre_only=False)),
    ("cu_pm", dict(r=2, mode="cu_pm", model="mf", layers=0, pre_only=False)),
    ("mf_random", dict(r=2, mode="none", model="mf", layers=0, pre_only=False)),
])
def test_variants_set_the_spec_table_values(variant, expected):
    m = compose(["method=pcrec", f"method.variant={variant}"]).method
    got = dict(r=m.rwr.r, mode=m.init.mode, model=m.finetune.model, layers=m.finetune.num_layers, pre_only=m.pre_only)
    assert got == expected


def test_an_explicit_option_overrides_the_variant_and_trainer_settings_follow_the_spec():
    cfg = compose(["method=pcrec", "method.variant=l1", "method.finetune.num_layers=3"])
    assert cfg.method.finetune.num_layers == 3 and cfg.method.finetune.model == "lightgcn"
    assert (cfg.trainer.eval_every, cfg.trainer.patience, cfg.trainer.monitor, cfg.trainer.max_epochs) == (10, 5, "recall@20", 1000)
    assert list(cfg.eval.ks) == [20, 40] and cfg.eval.map_denominator == "min_k_rel"


def test_mf_random_pretrains_nothing_and_pre_only_fine_tunes_nothing():
    data = toy_data()
    random_mf = method_from("method.variant=mf_random")
    random_mf.setup(data, torch.device("cpu"), 0)
    assert [p.max_epochs for p in random_mf.phases()] == [0, None]
    pre_only = method_from("method.variant=pre_only")
    pre_only.setup(data, torch.device("cpu"), 0)
    assert pre_only.phases()[1].max_epochs == 0 and pre_only.recommender is None


# ---------------------------------------------------------------------------- initialisation
def initialised(mode: str, *overrides: str) -> tuple[PCRec, torch.Tensor]:
    method = method_from(f"method.init.mode={mode}", *overrides)
    method.setup(toy_data(), torch.device("cpu"), 0)
    before = method.recommender.encoder.embedding.weight.detach().clone()
    method.start_phase(Phase("finetune"))
    return method, before


def test_each_init_mode_touches_exactly_the_rows_of_the_spec_table():
    users, items = 5, 6
    every = torch.arange(users + items)
    common = torch.tensor([0, 1])
    for mode in ("all_pm", "cu_pm", "cu_pe", "none"):
        method, before = initialised(mode)
        after = method.recommender.encoder.embedding.weight.detach()
        if mode == "all_pm":
            from_encoder = every
            expected = method.embed(method.target_graph, every, "init_target")
        elif mode == "cu_pm":
            from_encoder = common
            expected = method.embed(method.target_graph, common, "init_target")
        elif mode == "cu_pe":
            from_encoder = common
            expected = method.embed(method.source_graph, common, "init_source")
        else:
            from_encoder, expected = torch.zeros(0, dtype=torch.long), torch.zeros(0, 16)
        untouched = torch.ones(users + items, dtype=torch.bool)
        untouched[from_encoder] = False
        torch.testing.assert_close(after[from_encoder], expected, msg=mode)
        assert torch.equal(after[untouched], before[untouched]), mode  # random rows stay as drawn
        assert method.init_info["rows_from_encoder"] == from_encoder.numel()
    # cu_pe and cu_pm really differ: the source graph vs the target graph
    pe, _ = initialised("cu_pe")
    pm, _ = initialised("cu_pm")
    assert not torch.allclose(pe.recommender.encoder.embedding.weight[:2], pm.recommender.encoder.embedding.weight[:2])


def test_isolated_target_nodes_share_one_vector_or_stay_random():
    method, before = initialised("all_pm")
    table = method.recommender.encoder.embedding.weight.detach()
    isolated = (method.target_graph.degree == 0).nonzero().flatten()  # source-only user 2, item 5
    assert isolated.tolist() == [2, 5 + 5]
    torch.testing.assert_close(table[isolated[0]], table[isolated[1]])
    assert method.init_info["isolated_from_encoder"] == 2
    rand, before = initialised("all_pm", "method.init.isolated=random", "method.init.scale=2.0")
    table = rand.recommender.encoder.embedding.weight.detach()
    assert torch.equal(table[isolated], before[isolated])
    others = torch.tensor([0, 1, 3, 4, 5, 6, 7, 8, 9])
    every = rand.embed(rand.target_graph, torch.arange(11), "init_target")  # views are drawn per batch of nodes
    torch.testing.assert_close(table[others], 2.0 * every[others])


# ---------------------------------------------------------------------------- cache
def test_the_cache_key_changes_with_every_pretraining_option_the_seed_and_the_data():
    base = method_from()
    base.setup(toy_data(), torch.device("cpu"), 0)
    reference = artifact_key(base._cache_parts())
    groups = {"rwr": base.opt_rwr, "features": base.opt_features, "encoder": base.opt_encoder,
              "moco": base.opt_moco, "pretrain": base.opt_pretrain}
    changed = {int: lambda v: v + 1, float: lambda v: v / 2 + 0.01, bool: lambda v: not v}
    checked = 0
    for group, options in groups.items():
        for f in dataclasses.fields(options):
            value = getattr(options, f.name)
            if f.name in ("num_workers", "prefetch"):
                new = value + 1
            elif f.name in ("budget", "schedule", "seed_sampling"):
                new = {"budget": "deg075", "schedule": "constant", "seed_sampling": "deg075"}[f.name]
            elif f.name == "betas":
                new = [0.8, 0.99]
            elif value is None:
                new = 3
            else:
                new = changed[type(value)](value)
            variant = dataclasses.replace(options, **{f.name: new})
            setattr(base, f"opt_{group}", variant)
            key = artifact_key(base._cache_parts())
            setattr(base, f"opt_{group}", options)
            if f.name in ("num_workers", "prefetch"):  # do not change the weights
                assert key == reference, f"{group}.{f.name}"
            else:
                assert key != reference, f"{group}.{f.name}"
                checked += 1
    assert checked >= 25
    other_seed = method_from()
    other_seed.setup(toy_data(), torch.device("cpu"), 1)
    assert artifact_key(other_seed._cache_parts()) != reference
    other_data = method_from()
    other_data.setup(toy_data(common=False), torch.device("cpu"), 0)
    assert artifact_key(other_data._cache_parts()) != reference


def test_a_hit_skips_pretraining_and_loads_the_encoder_strictly(tmp_path):
    cache = ArtifactCache(tmp_path, log=lambda _: None)
    first = method_from("method.pretrain.max_steps=2")
    first.artifact_cache = cache
    first.setup(toy_data(), torch.device("cpu"), 0)
    assert first.phases()[0].max_epochs == 2  # 7 source nodes: one step of 8 seeds per epoch
    (tmp_path / "a").mkdir()
    Trainer(first, None, tmp_path / "a", max_epochs=0, save_last=False, log=lambda _: None)._run_phase(first.phases()[0])
    first.end_phase(first.phases()[0])
    second = method_from("method.pretrain.max_steps=2", "method.variant=cu_pm")  # init options are not in the key
    second.artifact_cache = cache
    second.setup(toy_data(), torch.device("cpu"), 0)
    assert second.cache_hit and second.phases()[0].max_epochs == 0
    for a, b in zip(first.moco.query.state_dict().values(), second.moco.query.state_dict().values()):
        assert torch.equal(a, b)
    third = method_from("method.pretrain.max_steps=2", "method.rwr.restart_prob=0.7")
    third.artifact_cache = cache
    third.setup(toy_data(), torch.device("cpu"), 0)
    assert not third.cache_hit and third.phases()[0].max_epochs == 2


# ---------------------------------------------------------------------------- determinism
def pretrain(method: PCRec, run_dir: Path, crash_at=None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    method.setup(toy_data(), torch.device("cpu"), 0)
    original = method.train_epoch

    def crashing(phase, epoch, progress):
        if crash_at is not None and (phase.name, epoch) == crash_at:
            raise KeyboardInterrupt
        return original(phase, epoch, progress)

    method.train_epoch = crashing
    method.phases = lambda: [Phase("pretrain", max_epochs=method.pretrain_epochs, select=False)]
    trainer = Trainer(method, None, run_dir, max_epochs=0, log=lambda _: None)
    try:
        trainer.fit()
    except KeyboardInterrupt:
        return


def test_resume_inside_pretraining_gives_the_same_encoder(tmp_path):
    options = ("method.pretrain.epochs=3", "method.pretrain.batch_size=4")
    straight = method_from(*options)
    pretrain(straight, tmp_path / "straight")
    crashed = method_from(*options)
    pretrain(crashed, tmp_path / "crashed", crash_at=("pretrain", 2))
    assert crashed.pretrain_step < straight.pretrain_step
    resumed = method_from(*options)
    resumed.setup(toy_data(), torch.device("cpu"), 0)
    resumed.phases = lambda: [Phase("pretrain", max_epochs=resumed.pretrain_epochs, select=False)]
    trainer = Trainer(resumed, None, tmp_path / "crashed", max_epochs=0, log=lambda _: None)
    trainer.restore(load_checkpoint(tmp_path / "crashed" / LAST))
    trainer.fit()
    assert resumed.pretrain_step == straight.pretrain_step == 3 * 2  # 7 source nodes, 4 per step
    for name, value in straight.moco.state_dict().items():
        assert torch.equal(value, resumed.moco.state_dict()[name]), name


def test_worker_processes_draw_the_same_subgraphs_as_the_main_process(tmp_path):
    inline = method_from("method.pretrain.max_steps=3", "method.pretrain.num_workers=0")
    workers = method_from("method.pretrain.max_steps=3", "method.pretrain.num_workers=2")
    pretrain(inline, tmp_path / "inline")
    pretrain(workers, tmp_path / "workers")
    for name, value in inline.moco.state_dict().items():
        assert torch.equal(value, workers.moco.state_dict()[name]), name


# ---------------------------------------------------------------------------- end to end
def test_topn_and_ctr_from_one_run_and_the_pretrained_embeddings_artifact(tmp_path):
    cfg = compose([*TINY_METHOD, *TINY_DATA, f"data.root={tmp_path / 'data'}", f"output_root={tmp_path}",
                   f"trainer.artifact_dir={tmp_path / 'cache'}", "method.pretrain.max_steps=3",
                   "method.finetune.max_epochs=2", "method.finetune.eval_every=1", "eval.tasks=[topn,ctr]",
                   "method.save_embeddings=true"])
    results = run_training(cfg, tmp_path / "run")
    assert {"auc", "logloss", "recall@20", "recall@40", "map@20", "map@40"} <= set(results["test"])
    table = pd.read_parquet(tmp_path / "run" / "pretrained_embeddings.parquet")
    info = json.loads((tmp_path / "run" / "pcrec.json").read_text())
    assert info["pretrain"]["steps"] == 3 and info["init"]["mode"] == "all_pm"
    assert len(table) == info["init"]["rows"] and list(table.columns[:4]) == ["kind", "id", "token", "isolated"]
    assert table.shape[1] == 4 + 16


def test_map_at_k_of_the_worked_example_through_pcrec_scoring():
    """Ranked [a, x, b, y, c] with R = {a, b, c}: Recall@4 = 2/3, MAP@4 = (1 + 2/3) / 3 = 0.5556,
    MAP@2 = 1 / 2 (spec §6, denominator min(K, |R|))."""
    items = [(0, 5), (0, 0), (0, 2), (0, 4)]  # user 0: train item 5 (masked), test a=0, b=2, c=4
    data = CrossDomainData(
        name="map", source_domains=["s"], target_domain="t", user_tokens=np.array(["u0", "u1"]),
        item_tokens={"s": np.array(["s0"]), "t": np.array([f"t{i}" for i in range(6)])},
        interactions={"s": rows([(0, 0), (1, 0)]), "t": rows(items + [(1, 1)], [0, 2, 2, 2, 0])},
    )
    method = method_from("method.variant=pre_only")
    method.setup(data, torch.device("cpu"), 0)
    table = torch.zeros(2 + 6, 16)
    table[0, 0] = 1.0
    table[2:, 0] = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.1])  # a, x, b, y, c, the train item
    method.e_init = table
    cfg = compose([*TINY_METHOD])
    evaluator = Evaluator(data.target_only(), tasks=["topn"], ks=[2, 4], map_denominator=cfg.eval.map_denominator)
    with method.evaluation():
        metrics = evaluator.evaluate(method, "test").metrics
    assert abs(metrics["recall@4"] - 2 / 3) < 1e-6
    assert round(metrics["map@4"], 4) == 0.5556 and abs(metrics["map@2"] - 0.5) < 1e-6
    with method.evaluation():  # eval.tasks=[ctr]: the click probability is sigmoid(e_u . e_i)
        users, items = torch.tensor([0, 0, 1]), torch.tensor([0, 3, 5])
        torch.testing.assert_close(method.predict_ctr(users, items),
                                   torch.sigmoid(method.score_users(users)[torch.arange(3), items]))


# ---------------------------------------------------------------------------- bad input
def run_cli(args, cwd: Path):
    env = {**os.environ, "CDRBENCH_DATA": str(cwd / "data"), "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "cdrbench", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=180)


@pytest.mark.parametrize("override, key", [
    ("method.rwr.restart_prob=1.0", "method.rwr.restart_prob"),
    ("method.rwr.restart_prob=0", "method.rwr.restart_prob"),
    ("method.rwr.max_subgraph_nodes=1", "method.rwr.max_subgraph_nodes"),
])
def test_bad_walk_options_exit_2_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        method_from(override)


def test_bad_input_from_the_command_line_exits_2_with_one_line_before_any_work(tmp_path):
    result = run_cli([*TINY_METHOD, *TINY_DATA, "method.rwr.restart_prob=1.5"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "cdrbench: error: method.rwr.restart_prob=1.5 must be in (0, 1)"
    assert not (tmp_path / "data").exists()  # refused before the data is even prepared


def test_common_user_modes_without_common_users_are_refused_before_pretraining():
    for mode in ("cu_pe", "cu_pm"):
        method = method_from(f"method.init.mode={mode}")
        with pytest.raises(ConfigError, match=f"method.init.mode={mode} initialises common users.*no user"):
            method.setup(toy_data(common=False), torch.device("cpu"), 0)
    method_from("method.init.mode=all_pm").setup(toy_data(common=False), torch.device("cpu"), 0)  # fine


def test_a_source_graph_without_edges_is_refused_before_pretraining():
    method = method_from()
    with pytest.raises(ConfigError, match="no edges"):
        method.setup(toy_data(source_edges=False), torch.device("cpu"), 0)
    with pytest.raises(ConfigError, match="exactly one source domain"):
        method.setup(toy_data().target_only(), torch.device("cpu"), 0)


def test_the_paper_data_is_configured_and_missing_files_are_named(tmp_path):
    cfg = compose(["method=pcrec", "data=ggf-pp", f"data.root={tmp_path}", "data.download=false"])
    assert cfg.data.domains.ggf.kcore == 10 and cfg.data.domains.pp.kcore == 5 and cfg.data.split.kind == "holdout"
    data_cfg = data_config(cfg)
    with pytest.raises(DataFileError, match="Grocery_and_Gourmet_Food_5.json.gz"):
        prepare(data_cfg, build_readers(data_cfg), progress=False, log=lambda _: None)


def test_ggf_pp_prints_table_one_against_both_kcore_readings(tmp_path, capsys):
    """Files in the Amazon 2018 5-core schema, generated here (the real ones cannot be downloaded
    in CI): prepare prints the paper's Table I next to the counts of each k-core mode."""
    import gzip

    from cdrbench.app import run_prepare

    rng = np.random.default_rng(0)
    folder = tmp_path / "amazon2018"
    folder.mkdir()
    for category, users, items, per_user in (("Grocery_and_Gourmet_Food", 60, 40, 14), ("Prime_Pantry", 50, 30, 7)):
        with gzip.open(folder / f"{category}_5.json.gz", "wt") as handle:
            for u in range(users):
                for i in rng.choice(items, size=int(rng.integers(per_user - 4, per_user + 4)), replace=False):
                    handle.write(json.dumps({"overall": 5.0, "verified": True, "reviewerID": f"A{u}", "asin": f"{category[:2]}{i}",
                                             "unixReviewTime": int(1_400_000_000 + rng.integers(10**6)), "summary": "ok"}) + "\n")
    counts = {}
    for mode in ("bipartite", "user_only"):
        cfg = compose(["data=ggf-pp", f"data.root={tmp_path}", "trainer.progress=false",
                       f"data.domains.ggf.kcore_mode={mode}", f"data.domains.pp.kcore_mode={mode}"])
        data = run_prepare(cfg)
        out = capsys.readouterr().out
        assert "against the expected statistics" in out and "31230" in out and "4970" in out and "4275" in out
        counts[mode] = (data.num_items("ggf"), data.num_items("pp"))
    assert counts["user_only"] != counts["bipartite"]  # the two readings of the footnote differ here

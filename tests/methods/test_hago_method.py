"""HAGO as a method: prompt tuning touches only the prompts, the pre-training cache, exact resume
in both phases, the variants end to end, profiles, and bad input (spec §11 test 6, issue
acceptance 2)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from cdrbench.app import build_method, build_readers, data_config, run_training
from cdrbench.config import DataConfig, DomainConfig, SplitConfig, compose
from cdrbench.data.prepare import prepare
from cdrbench.errors import ConfigError
from cdrbench.methods.base import Phase
from cdrbench.methods.hago.method import HAGO
from cdrbench.methods.hago.prompt import GraphPrompt, TargetRecommender
from cdrbench.methods.hago.encoders import LightGCN, WeightedGraph
from cdrbench.models.sparse import CSRPattern
from cdrbench.train.artifact_cache import ArtifactCache
from tests.conftest import TINY_SYNTHETIC

TINY = [
    "method=hago",
    *TINY_SYNTHETIC,
    "method.model.embedding_dim=8",
    "method.model.num_coords=2",
    "method.pretrain.batch_size=48",
    "method.pretrain.epochs=2",
    "method.tune.batch_size=128",
    "method.tune.max_epochs=3",
    "trainer.progress=false",
]
NO_STEP = lambda iterable, **_: iterable  # noqa: E731 - the progress callable without a bar


def compose_tiny(tmp_path, *overrides):
    return compose([*TINY, f"data.root={tmp_path / 'data'}", f"output_root={tmp_path}",
                    f"trainer.artifact_dir={tmp_path / 'artifacts'}", *overrides])


def make(tmp_path, *overrides, cache: bool = False):
    cfg = compose_tiny(tmp_path, *overrides)
    data_cfg = data_config(cfg)
    data = prepare(data_cfg, build_readers(data_cfg), progress=False, log=lambda _: None)
    _, method = build_method(cfg)
    if cache:
        method.artifact_cache = ArtifactCache(tmp_path / "artifacts", log=lambda _: None)
    method.setup(data, torch.device("cpu"), seed=int(cfg.seed))
    return cfg, data, method


def run(tmp_path, name, *overrides):
    return run_training(compose_tiny(tmp_path, *overrides), tmp_path / name)


# ---------------------------------------------------------------------------- prompt tuning
def test_tuning_trains_only_the_prompts_and_the_frozen_tables_stay_bit_identical(tmp_path):
    _, data, method = make(tmp_path)
    method.train_epoch(Phase("pretrain", select=False), 0, NO_STEP)
    pretrained = {k: v.clone() for k, v in method.pretrainer.state_dict().items()}
    method.start_phase(Phase("tune"))
    tuner = method.tuner
    assert method.trainable_parameter_names() == ["inputs.user_prompt", "inputs.item_prompt"]
    trained = {id(p) for group in method.tune_optimizer.param_groups for p in group["params"]}
    assert trained == {id(tuner.inputs.user_prompt), id(tuner.inputs.item_prompt)}
    users, pos = method.train_users[:50], method.train_items[:50]
    neg = (pos + 1) % method.num_target_items
    tuner.loss(users, pos, neg, 0.01, "batch_frobenius").backward()
    for name, parameter in tuner.named_parameters():
        has_grad = parameter.grad is not None and bool(parameter.grad.abs().sum() > 0)
        assert has_grad == name.startswith("inputs.") and name.endswith("_prompt"), name
    assert all(p.grad is None for p in method.pretrainer.parameters())
    prompts_before = tuner.inputs.user_prompt.detach().clone()
    for epoch in range(2):
        method.train_epoch(Phase("tune"), epoch, NO_STEP)
    assert not torch.equal(prompts_before, tuner.inputs.user_prompt)  # the prompts did learn
    target_items = method.pretrainer.layout.item_block(data.target_domain)
    ego = torch.cat([pretrained["user_embedding.weight"], pretrained["item_embedding.weight"]])
    frozen = torch.cat([ego[: data.num_users], ego[target_items]])
    assert torch.equal(tuner.inputs.pretrained, frozen)  # bit-identical after tuning
    for key, value in method.pretrainer.state_dict().items():
        assert torch.equal(value, pretrained[key]), key


def test_tuning_loss_is_bpr_plus_the_regulariser_of_eq7_by_hand():
    src, dst = torch.tensor([0, 2, 1, 3]), torch.tensor([2, 0, 3, 1])  # users 0, 1; items 0, 1 (nodes 2, 3)
    pattern, _ = CSRPattern.from_edges(src, dst, 4)
    pretrained = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, -1.0]])
    prompt = GraphPrompt(pretrained, torch.arange(2), torch.tensor([2, 3]), init="zeros")
    with torch.no_grad():
        prompt.user_prompt.copy_(torch.tensor([[0.3, 0.4], [0.0, 0.0]]))
        prompt.item_prompt.copy_(torch.tensor([[0.0, 1.0], [2.0, 0.0]]))
    model = TargetRecommender(prompt, LightGCN(1), WeightedGraph(pattern, torch.ones(4)), torch.arange(2), torch.tensor([2, 3]))
    users, pos, neg = torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([1, 0])
    h = torch.stack([torch.tensor([1.0, 2.0]), torch.tensor([2.5, -1.0]), torch.tensor([1.3, 0.4]), torch.tensor([0.0, 1.0])])
    # one LightGCN layer on the degree-1 graph swaps each user with its item: h_u0 = ê_i0, h_i0 = ê_u0, ...
    hu, hi = h[[0, 1]], h[[2, 3]]
    scores = lambda u, i: float((hu[u] * hi[i]).sum())  # noqa: E731
    bpr = sum(-torch.log(torch.sigmoid(torch.tensor(scores(u, i) - scores(u, j)))) for u, i, j in [(0, 0, 1), (1, 1, 0)]) / 2
    # Reg = (||P_U[B_u]||_F + ||P_I[B_i]||_F + ||P_I[B_j]||_F) / |B| = (0.5 + sqrt(5) + sqrt(5)) / 2
    expected = float(bpr) + 0.1 * (0.5 + math.sqrt(1.0 + 4.0) + math.sqrt(4.0 + 1.0)) / 2
    got = float(model.loss(users, pos, neg, 0.1, "batch_frobenius"))
    assert got == pytest.approx(expected, rel=1e-5)
    squared = float(bpr) + 0.1 * (0.25 + 5.0 + 5.0) / (2 * 2)
    assert float(model.loss(users, pos, neg, 0.1, "squared_l2")) == pytest.approx(squared, rel=1e-5)


# ---------------------------------------------------------------------------- cache
PRETRAINING_OPTIONS = {
    "method.pretrain.epochs": 3, "method.pretrain.lr": 0.01, "method.pretrain.aug.edge_drop": 0.2,
    "method.pretrain.aug.feature_mask": 0.2, "method.pretrain.aug.edge_drop_symmetric": True,
    "method.pretrain.batch_size": 64, "method.pretrain.tau": 0.2, "method.pretrain.method": "costa",
    "method.pretrain.anchor_order": "mixed", "method.pretrain.pad_node": False, "method.model.num_coords": 3,
    "method.model.embedding_dim": 16, "method.encoder.layer_combination": "mean", "method.encoder.num_layers": 3,
    "method.encoder.name": "gcn", "method.coord.item_weight_source": "user_coords_refcode",
    "method.coord.detach_node": False, "method.variant": "heter_go", "optimizer._target_": "torch.optim.AdamW",
}


def test_pretraining_cache_key_changes_with_every_pretraining_option_the_seed_and_the_data(tmp_path):
    cfg, data, base = make(tmp_path)
    keys = {json.dumps(base.cache_parts(), sort_keys=True)}
    for key, value in PRETRAINING_OPTIONS.items():  # same data and seed, one option changed
        changed = cfg.copy()
        OmegaConf.update(changed, key, value)
        _, other = build_method(changed)
        other.data, other.seed = data, base.seed
        keys.add(json.dumps(other.cache_parts(), sort_keys=True))
        assert len(keys) == list(PRETRAINING_OPTIONS).index(key) + 2, key
    reseeded = make(tmp_path, "seed=1")[2]
    changed_data = make(tmp_path, "data.domains.src.reader.interactions_per_user=9")[2]
    for other in (reseeded, changed_data):
        assert other.cache_parts() != base.cache_parts()


def test_pretraining_cache_ignores_tuning_options_and_a_hit_skips_pretraining_exactly(tmp_path):
    cfg, data, base = make(tmp_path)
    tuning = {"method.tune.lr": 0.5, "method.tune.reg_weight": 0.0, "method.tune.graph": "unified",
              "method.tune.prompt_init": "zeros", "method.tune.max_epochs": 7, "method.save_embeddings": True}
    for key, value in tuning.items():
        changed = cfg.copy()
        OmegaConf.update(changed, key, value)
        _, other = build_method(changed)
        other.data, other.seed = data, base.seed
        assert other.cache_parts() == base.cache_parts(), key
    first = run(tmp_path, "first")
    second = run(tmp_path, "second")
    history = pd.read_csv(tmp_path / "second" / "history.csv")
    assert set(history["phase"]) == {"tune"}  # the pre-training phase had 0 epochs
    assert len(pd.read_csv(tmp_path / "first" / "history.csv").query("phase == 'pretrain'")) == 2
    assert second["test"] == first["test"] and second["valid"] == first["valid"]
    entries = list((tmp_path / "artifacts" / "hago").iterdir())
    assert len(entries) == 1 and (entries[0] / "meta.json").is_file()
    third = run(tmp_path, "third", "method.pretrain.lr=0.02")  # a miss: trains and stores another entry
    assert len(list((tmp_path / "artifacts" / "hago").iterdir())) == 2 and third["test"] != first["test"]


# ---------------------------------------------------------------------------- resume
@pytest.mark.parametrize("crash_at, cache", [(("pretrain", 1), "false"), (("tune", 1), "true")])
def test_resume_inside_each_phase_gives_the_uninterrupted_results(tmp_path, monkeypatch, crash_at, cache):
    overrides = [f"trainer.artifact_cache={cache}", "trainer.patience=50"]
    reference = run(tmp_path, "reference", *overrides)
    if cache == "true":  # the crashed run must not find the reference's cache entry
        overrides.append(f"trainer.artifact_dir={tmp_path / 'artifacts-2'}")
    original = HAGO.train_epoch

    def crash(self, phase, epoch, progress):
        if (phase.name, epoch) == crash_at:
            raise KeyboardInterrupt("simulated crash")
        return original(self, phase, epoch, progress)

    monkeypatch.setattr(HAGO, "train_epoch", crash)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "crashed", *overrides)
    monkeypatch.setattr(HAGO, "train_epoch", original)
    resumed = run(tmp_path, "resumed", *overrides, f"trainer.resume_from={tmp_path / 'crashed'}")
    assert resumed["test"] == reference["test"] and resumed["valid"] == reference["valid"]
    ours = pd.read_csv(tmp_path / "resumed" / "history.csv")
    theirs = pd.read_csv(tmp_path / "reference" / "history.csv")
    pd.testing.assert_series_equal(ours["loss"], theirs["loss"])


# ---------------------------------------------------------------------------- variants, artifacts
@pytest.mark.parametrize("variant", ["hago", "heter_go", "homo_go", "wo_go", "backbone"])
def test_variants_run_end_to_end_with_their_artifacts(tmp_path, variant):
    results = run(tmp_path, variant, f"method.variant={variant}", "method.save_embeddings=true",
                  "eval.tasks=[topn,ctr]", "method.tune.max_epochs=1", "method.pretrain.epochs=1")
    assert results["variant"] == variant and 0 <= results["test"]["recall@10"] <= 1 and "auc" in results["test"]
    assert set(results["seconds"]["per_epoch_by_phase"]) == ({"tune"} if variant == "backbone" else {"pretrain", "tune"})
    run_dir = tmp_path / variant
    has_coords = variant in ("hago", "heter_go", "homo_go")
    assert (run_dir / "coord_weights.parquet").is_file() == has_coords
    if has_coords:
        table = pd.read_parquet(run_dir / "coord_weights.parquet")
        assert set(table["domain"]) == {"src", "tgt"}
        if variant != "hago":  # fixed weights: everything in the last bin
            assert (table.query("bin == 9")["share"] == 1.0).all() and (table["mean"] == 1.0).all()
    embeddings = pd.read_parquet(run_dir / "embeddings.parquet")
    stages = set(embeddings["stage"])
    assert stages == ({"tuned"} if variant == "backbone" else {"pretrained", "tuned"})
    assert {"e0", "e7"} <= set(embeddings.columns)


def test_weights_per_variant_inside_the_method(tmp_path):
    _, _, heter = make(tmp_path, "method.variant=heter_go")
    graph = heter.pretrainer.parts[0].graph
    x = heter.pretrainer.node_features()
    assert heter.pretrainer.pair_weights(graph, x) is None  # fixed: every entry weight 1
    assert torch.equal(graph.weights(), torch.ones(graph.pattern.nnz))
    _, _, hago = make(tmp_path)
    adaptive = hago.pretrainer.pair_weights(hago.pretrainer.parts[0].graph, hago.pretrainer.node_features())
    assert (adaptive >= 0).all() and (adaptive < 1).any() and (adaptive == 0).any()
    _, _, wo_go = make(tmp_path, "method.variant=wo_go")
    assert wo_go.pretrainer.coordinators is None and wo_go.pretrainer.layout.num_coords == 0
    _, _, separate = make(tmp_path, "method.variant=wo_go", "method.wo_go.graph=separate")
    assert len(separate.pretrainer.parts) == 2
    loss = separate.pretrainer(torch.arange(separate.pretrainer.layout.num_nodes), separate.aug_generator)
    assert torch.isfinite(loss)


def test_three_domains_two_sources(tmp_path):
    def domain(seed, items):
        return DomainConfig(reader={"_target_": "cdrbench.data.sources.synthetic.SyntheticDomain", "num_users": 50,
                                    "num_items": items, "interactions_per_user": 8, "domain_seed": seed})

    cfg = DataConfig(name="three", root=str(tmp_path / "data"), domains={"a": domain(1, 30), "b": domain(2, 20), "c": domain(3, 25)},
                     source=["a", "b"], target="c", split=SplitConfig(kind="ratio"))
    data = prepare(cfg, build_readers(cfg), progress=False, log=lambda _: None)
    method = HAGO(torch.optim.Adam, model={"embedding_dim": 8, "num_coords": 2}, pretrain={"batch_size": 32, "epochs": 1})
    method.setup(data, torch.device("cpu"), seed=0)
    layout = method.pretrainer.layout
    assert layout.num_coords == 2 * 3 * 2 and layout.item_domains == ["c", "a", "b"]
    assert {(b.domain, b.kind) for b in method.pretrainer.parts[0].graph.blocks} == {
        (d, k) for d in "abc" for k in ("user", "item")}
    stats = method.train_epoch(Phase("pretrain", select=False), 0, NO_STEP)
    method.start_phase(Phase("tune"))
    method.train_epoch(Phase("tune"), 0, NO_STEP)
    with method.evaluation():
        scores = method.score_users(torch.arange(5))
    assert scores.shape == (5, data.num_items("c")) and stats["steps"] > 1


# ---------------------------------------------------------------------------- profiles and input
def test_profiles_resolve_the_flags():
    paper = compose(["method=hago", "data=douban"])
    assert paper.method.pretrain.method == "grace" and paper.method.coord.item_weight_source == "item_coords"
    assert paper.data.source_filter == "per_domain" and paper.trainer.stopping_rule == "recbole"
    assert paper.trainer.patience == 10 and paper.trainer.monitor == "ndcg@10"
    refcode = compose(["method=hago", "data=douban", "method.profile=refcode"])
    assert refcode.method.pretrain.method == "costa"  # the released Douban yaml
    assert refcode.method.coord.item_weight_source == "user_coords_refcode" and refcode.data.source_filter == "merged"
    amazon = compose(["method=hago", "data=amazon-hago", "method.profile=refcode"])
    assert amazon.method.pretrain.method == "grace"  # the released Amazon yaml


@pytest.mark.parametrize("override, key, allowed", [
    ("method.model.num_coords=0", "method.model.num_coords", ">= 1"),
    ("method.pretrain.method=simclr", "method.pretrain.method", "['grace', 'bgrl', 'costa']"),
    ("method.encoder.name=sage", "method.encoder.name", "['lightgcn', 'gcn', 'gat']"),
    ("method.variant=hago2", "method.variant", "'homo_go'"),
    ("+method.pretrain.aug.drop=0.1", "method.pretrain.aug", "valid keys"),
])
def test_bad_options_name_the_key_and_the_allowed_values(override, key, allowed):
    with pytest.raises(ConfigError) as error:
        build_method(compose(["method=hago", override]))
    assert key in str(error.value) and allowed in str(error.value)


def test_data_without_source_or_target_training_rows_is_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match=r"data 'synthetic' has none \(data.source"):
        run(tmp_path, "none", "data.source=[]")
    assert not (tmp_path / "data").exists()  # refused before preparing anything
    with pytest.raises(ConfigError, match=r"target domain 'tgt' \(data.target\) has no training rows"):
        run(tmp_path, "empty", "data.split.kind=temporal", "data.split.ratios=[1e-9,0.5,0.499999999]")
    assert not (tmp_path / "empty" / "results.json").exists()


@pytest.mark.slow
def test_cli_bad_value_exits_2_with_one_line_naming_the_key(tmp_path):
    env = {**os.environ, "CDRBENCH_DATA": str(tmp_path / "data"), "HYDRA_FULL_ERROR": "0"}
    result = subprocess.run([sys.executable, "-m", "cdrbench", "method=hago", "method.model.num_coords=0",
                             f"output_root={tmp_path}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "method.model.num_coords=0" in result.stderr and ">= 1" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "data").exists()  # before any data work


@pytest.mark.parametrize("encoder, objective", [("gcn", "bgrl"), ("gat", "costa"), ("lightgcn", "bgrl")])
def test_other_encoders_pretrain_then_tune_with_frozen_weights(tmp_path, encoder, objective):
    _, _, method = make(tmp_path, f"method.encoder.name={encoder}", f"method.pretrain.method={objective}")
    first = method.train_epoch(Phase("pretrain", select=False), 0, NO_STEP)
    assert torch.isfinite(torch.tensor(first["loss"]))
    method.start_phase(Phase("tune"))
    encoder_before = {k: v.clone() for k, v in method.tuner.encoder.state_dict().items()}
    method.train_epoch(Phase("tune"), 0, NO_STEP)
    for key, value in method.tuner.encoder.state_dict().items():  # the pre-trained encoder stays frozen
        assert torch.equal(value, encoder_before[key]), key
    assert method.trainable_parameter_names() == ["inputs.user_prompt", "inputs.item_prompt"]
    # BGRL keeps an EMA copy only of an encoder with weights
    assert (method.pretrainer.target_encoder is not None) == (objective == "bgrl" and encoder != "lightgcn")


def test_real_douban_pair_builds_the_unified_graph_of_its_training_rows(tmp_path):
    from tests.conftest import shared_path

    root = shared_path("douban-dtcdr").parent
    cfg = compose(["method=hago", "data=douban-dtcdr-hago", f"data.root={root}", f"data.cache_dir={tmp_path}"])
    data_cfg = data_config(cfg)
    data = prepare(data_cfg, build_readers(data_cfg), progress=False, log=lambda _: None)
    _, method = build_method(cfg)
    method.setup(data, torch.device("cpu"), seed=0)
    graph = method.pretrainer.parts[0].graph
    layout = method.pretrainer.layout
    pairs, members = 0, 0
    for domain in data.domains:
        rows = data.train(domain)  # the target's training rows only
        pairs += len(set(zip(rows.user.tolist(), rows.item.tolist())))
        members += len(set(rows.user.tolist())) + len(set(rows.item.tolist()))
    node_entries = (graph.pattern.row < layout.coord_start) & (graph.pattern.col < layout.coord_start)
    assert int(node_entries.sum()) == 2 * pairs  # R in both directions, repeated pairs once
    assert graph.num_pairs == 5 * members  # K = 5 coordinators per type and domain
    user_coords = len(data.domains) * 5
    assert graph.pattern.nnz == 2 * pairs + 2 * graph.num_pairs + 2 * user_coords * user_coords  # + J both ways
    loss = method.pretrainer(torch.arange(1024), method.aug_generator)
    assert torch.isfinite(loss) and loss.requires_grad

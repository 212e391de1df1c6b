"""BiGNAS as a method: variants, profiles, the bi-level loop's gradient routing, determinism."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from cdrbench.app import build_method, build_readers, data_config, run_training
from cdrbench.config import compose
from cdrbench.data.prepare import prepare
from cdrbench.methods.base import Phase
from cdrbench.methods.bignas.hypergrad import neumann_hypergradient
from cdrbench.methods.bignas.method import BiGNAS

TINY = [
    "method=bignas",
    "data=synthetic",
    "data.domains.src.reader.num_users=50",
    "data.domains.tgt.reader.num_users=50",
    "data.domains.src.reader.num_items=40",
    "data.domains.tgt.reader.num_items=30",
    "data.domains.src.reader.interactions_per_user=10",
    "data.domains.tgt.reader.interactions_per_user=10",
    "data.domains.src.reader.user_share=1.0",
    "data.domains.tgt.reader.user_share=1.0",
    "method.train.batch_size=64",
    "method.bilevel.meta_batch_size=32",
    "method.bilevel.outer_every=2",
    "method.bilevel.warmup_epochs=0",
    "trainer.progress=false",
]


def make(tmp_path, *overrides):
    cfg = compose([*TINY, f"data.root={tmp_path / 'data'}", *overrides])
    data_cfg = data_config(cfg)
    data = prepare(data_cfg, build_readers(data_cfg), progress=False, log=lambda _: None)
    _, method = build_method(cfg)
    return cfg, data, method


def run(tmp_path, name, *overrides):
    cfg = compose([*TINY, f"data.root={tmp_path / 'data'}", f"output_root={tmp_path}", *overrides])
    return run_training(cfg, tmp_path / name)


@pytest.mark.parametrize(
    "variant",
    ["full", "mix", "no_source", "no_impo", "discrete", "manual"],
)
def test_every_variant_trains_one_epoch(tmp_path, variant):
    extra = ["method.arch.manual_op=sage"] if variant == "manual" else []
    results = run(tmp_path, variant, f"method.variant={variant}", "trainer.max_epochs=1", *extra)
    assert 0.0 <= results["test"]["auc"] <= 1.0
    assert results["variant"] == variant
    alpha = [json.loads(line) for line in (tmp_path / variant / "alpha.jsonl").read_text().splitlines()]
    assert alpha and "alpha" in alpha[-1]
    if variant == "discrete":
        ops = json.loads((tmp_path / variant / "discrete_ops.json").read_text())
        assert set(ops) == {"source", "target"} and all(len(v) == 2 for v in ops.values())
        assert [row["phase"] for row in alpha] == ["search", "retrain"]


def test_refcode_profile_runs_and_resolves_its_flags(tmp_path):
    cfg, data, method = make(tmp_path, "method.profile=refcode")
    assert cfg.method.model.space[1] == "gatv2" and cfg.optimizer._target_ == "torch.optim.AdamW"
    assert cfg.trainer.max_epochs == 1000 and cfg.data.sort == "unstable_refcode"
    assert method.opt_perceptor.form == "item_only" and method.opt_bilevel.neumann_eta == 0.001
    assert method.opt_model.predictor_kind == "linear_leaky" and not method.opt_model.shared_forward_per_step
    method.setup(data, torch.device("cpu"), seed=0)
    stats = method.train_epoch(Phase("train"), 0, lambda it, **_: it)
    assert stats["outer_steps"] >= 1 and method.replace_head is not None  # the unused replace head runs


def test_paper_profile_defaults(tmp_path):
    cfg, _, method = make(tmp_path, "method.bilevel.warmup_epochs=10")
    assert list(cfg.method.model.space) == ["gcn", "gat", "sage", "lightgcn", "linear"]
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.trainer.max_epochs == 100
    assert method.opt_perceptor.form == "three_level" and method.opt_perceptor.graph == "train_union"
    assert method.opt_bilevel.neumann_eta == 1.0 and not method.opt_bilevel.run_unused_replace_head


def test_mix_keeps_alpha_fixed_and_manual_has_one_op(tmp_path):
    _, data, mix = make(tmp_path, "method.variant=mix")
    mix.setup(data, torch.device("cpu"), seed=0)
    before = {d: mix.model.supernets[d].op_weights().clone() for d in mix.model.domains}
    mix.train_epoch(Phase("train"), 0, lambda it, **_: it)
    for d, w in before.items():
        torch.testing.assert_close(mix.model.supernets[d].op_weights(), w)
        torch.testing.assert_close(w, torch.full_like(w, 1 / w.shape[1]))
    _, data, manual = make(tmp_path, "method.variant=manual", "method.arch.manual_op=gcn")
    manual.setup(data, torch.device("cpu"), seed=0)
    assert all(net.space == ["gcn"] for net in manual.model.supernets.values())


def test_no_source_touches_no_source_row_or_edge(tmp_path):
    """Replacing every source interaction by random ones changes nothing in a no_source run."""
    import copy

    _, data, method = make(tmp_path, "method.variant=no_source")
    scrambled = copy.copy(data)
    scrambled.interactions = dict(data.interactions)
    src = data.interactions["src"]
    generator = torch.Generator().manual_seed(1)
    scrambled.interactions["src"] = type(src)(
        user=torch.randint(0, data.num_users, (len(src),), generator=generator),
        item=torch.randint(0, data.num_items("src"), (len(src),), generator=generator),
        rating=src.rating, ts=src.ts, split=src.split, y=1 - src.y,
    )
    outcomes = []
    for dataset in (data, scrambled):
        _, _, fresh = make(tmp_path, "method.variant=no_source")
        fresh.setup(dataset, torch.device("cpu"), seed=0)
        losses = [fresh.train_epoch(Phase("train"), e, lambda it, **_: it)["loss"] for e in range(2)]
        with fresh.evaluation():
            valid = dataset.rows("tgt", "valid")
            outcomes.append((losses, fresh.predict_ctr(valid.user, valid.item)))
    assert outcomes[0][0] == outcomes[1][0]
    torch.testing.assert_close(outcomes[0][1], outcomes[1][1], rtol=0, atol=0)
    method.setup(data, torch.device("cpu"), seed=0)
    assert method.g_s is None and method.perceptron is None
    assert not any("source" in name for name, _ in method.model.named_parameters())
    assert "source" not in method.heads


def test_no_impo_weights_are_uniform_and_no_outer_step(tmp_path):
    _, data, method = make(tmp_path, "method.variant=no_impo")
    method.setup(data, torch.device("cpu"), seed=0)
    rows = method.source_rows.take(torch.arange(17), "cpu")
    reps_s, _ = method.model(method.g_s, method.g_t)
    torch.testing.assert_close(method.source_weights(reps_s, rows), torch.full((17,), 1 / 17))
    stats = method.train_epoch(Phase("train"), 0, lambda it, **_: it)
    assert stats["outer_steps"] == 0 and method.perceptron is None


def test_perceptron_moves_only_by_the_outer_step(tmp_path, monkeypatch):
    """Inner steps leave φ and φ.grad untouched; an outer step sets φ.grad to exactly the
    (clipped) Neumann hypergradient, overwriting whatever was there."""
    import cdrbench.methods.bignas.method as method_module

    _, data, method = make(tmp_path, "method.bilevel.outer_every=1000", "method.bilevel.outer_clip_norm=1e9")
    method.setup(data, torch.device("cpu"), seed=0)
    phi_before = [p.detach().clone() for p in method.perceptron.parameters()]
    method.train_epoch(Phase("train"), 0, lambda it, **_: it)
    for p, before in zip(method.perceptron.parameters(), phi_before):
        assert p.grad is None
        torch.testing.assert_close(p, before)

    recorded = {}

    def recording(*args, **kwargs):
        recorded["grads"] = neumann_hypergradient(*args, **kwargs)
        return recorded["grads"]

    monkeypatch.setattr(method_module, "neumann_hypergradient", recording)
    for p in method.perceptron.parameters():  # a stale gradient must be overwritten, not added to
        p.grad = torch.full_like(p, 123.0)
    method.outer_step()
    for p, g in zip(method.perceptron.parameters(), recorded["grads"]):
        torch.testing.assert_close(p.grad, g)
    assert any(g.abs().sum() > 0 for g in recorded["grads"])
    assert any(not torch.equal(p, b) for p, b in zip(method.perceptron.parameters(), phi_before))


def test_warmup_epochs_delay_the_outer_steps(tmp_path):
    _, data, method = make(tmp_path, "method.bilevel.warmup_epochs=2", "method.bilevel.outer_every=1")
    method.setup(data, torch.device("cpu"), seed=0)
    counts = [method.train_epoch(Phase("train"), e, lambda it, **_: it)["outer_steps"] for e in range(3)]
    assert counts[0] == 0 and counts[1] == 0 and counts[2] > 0


def test_same_seed_same_validation_curve(tmp_path):
    first = run(tmp_path, "a", "trainer.max_epochs=2", "seed=5")
    second = run(tmp_path, "b", "trainer.max_epochs=2", "seed=5")
    ha = pd.read_csv(tmp_path / "a" / "history.csv")
    hb = pd.read_csv(tmp_path / "b" / "history.csv")
    pd.testing.assert_series_equal(ha["valid_auc"], hb["valid_auc"])
    assert first["test"] == second["test"]


def test_outputs_interpretability_files(tmp_path):
    run(tmp_path, "r", "trainer.max_epochs=2")
    table = pd.read_parquet(tmp_path / "r" / "importance.parquet")
    assert len(table) > 0 and table["relative_weight"].mean() == pytest.approx(1.0, rel=1e-4)
    assert (table["relative_weight"] >= 0).all()
    lines = (tmp_path / "r" / "alpha.jsonl").read_text().splitlines()
    entry = json.loads(lines[-1])
    for domain in ("source", "target"):
        for layer in entry["alpha"][domain]:
            assert sum(layer) == pytest.approx(1.0, abs=1e-5) and len(layer) == 5


def test_bad_options_name_the_key(tmp_path):
    from cdrbench.errors import ConfigError

    with pytest.raises(ConfigError, match="method.perceptor.form"):
        BiGNAS(optimizer=torch.optim.Adam, perceptor={"form": "two_level"})
    with pytest.raises(ConfigError, match="method.model"):
        BiGNAS(optimizer=torch.optim.Adam, model={"n_layers": 3})
    with pytest.raises(ConfigError, match="manual_op"):
        BiGNAS(optimizer=torch.optim.Adam, variant="manual")
    with pytest.raises(ConfigError, match="method.variant"):
        BiGNAS(optimizer=torch.optim.Adam, variant="darts")

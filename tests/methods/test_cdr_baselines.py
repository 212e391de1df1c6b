"""Cross-domain baselines (CMF, EMCDR, CoNet, BiTGCF, XSimGCL): each method's defining property,
shapes, the options' errors, and that an interrupted run resumes to the uninterrupted result."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from cdrbench.app import build_method, build_readers, data_config, run_training
from cdrbench.config import compose
from cdrbench.data.prepare import prepare
from cdrbench.errors import ConfigError
from cdrbench.methods.base import Phase
from cdrbench.methods.cdr.bitgcf import BiTGCF, TransferLayer
from cdrbench.methods.cdr.cmf import CMF
from cdrbench.methods.cdr.common import PointwiseRows, TwoDomains
from cdrbench.methods.cdr.conet import CoNet, CrossTowers
from cdrbench.methods.cdr.emcdr import EMCDR
from cdrbench.methods.cdr.xsimgcl import XSimGCL, XSimGCLEncoder, sign_noise
from cdrbench.models.sparse import spmm

METHODS = ["cmf", "emcdr", "conet", "bitgcf", "xsimgcl"]
from tests.conftest import TINY_SYNTHETIC

TINY = [
    *TINY_SYNTHETIC,
    "data.domains.src.reader.user_share=0.7",  # partial overlap: some users in one domain only
    "data.domains.tgt.reader.user_share=0.7",
    "trainer.progress=false",
    "optimizer.lr=0.01",
]
# small batches, so that an epoch has several steps
BATCH = {"cmf": 64, "emcdr": 64, "conet": 64, "bitgcf": 64, "xsimgcl": 64}
NOOP = lambda iterable, **_: iterable  # noqa: E731  (progress bar off)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("cdr-data")


def configure(data_root, method, *overrides, output_root=None):
    extra = [f"output_root={output_root}"] if output_root else []
    return compose([*TINY, f"method={method}", f"method.batch_size={BATCH[method]}", f"data.root={data_root}",
                    *extra, *overrides])


def make(data_root, method, *overrides, seed=0):
    """The built method, set up on the tiny data (the source domain included unless the method
    is single-domain), plus the data view."""
    cfg = configure(data_root, method, *overrides)
    data_cfg = data_config(cfg)
    data = prepare(data_cfg, build_readers(data_cfg), progress=False, log=lambda _: None)
    _, built = build_method(cfg)
    view = data if built.uses_source_by_default else data.target_only()
    built.setup(view, torch.device("cpu"), seed)
    return built, view


def overlap_users(view) -> torch.Tensor:
    return TwoDomains.from_data(view, "test").overlap


# ---------------------------------------------------------------------------- shared pieces
def test_pointwise_batches_hold_positives_then_their_sampled_negatives(data_root):
    _, view = make(data_root, "cmf")
    rows = TwoDomains.from_data(view, "cmf").target
    stream = PointwiseRows(rows, "sampled", batch_size=50, generator=torch.Generator().manual_seed(0))
    train_pairs = set(zip(rows.user.tolist(), rows.item.tolist()))
    batches = list(stream.batches())
    assert len(batches) == stream.num_batches() == math.ceil(len(stream) / 25)
    users, items, labels = batches[0]
    assert len(users) == 50 and labels[:25].eq(1).all() and labels[25:].eq(0).all()
    assert torch.equal(users[:25], users[25:])  # one negative per positive, same user
    assert all((u, i) in train_pairs for u, i in zip(users[:25].tolist(), items[:25].tolist()))
    assert not any((u, i) in train_pairs for u, i in zip(users[25:].tolist(), items[25:].tolist()))
    cycled = list(stream.batches(num_batches=3 * stream.num_batches()))  # a shorter domain cycles
    assert len(cycled) == 3 * stream.num_batches()


def test_cdr_methods_need_a_source_domain(data_root):
    cfg = configure(data_root, "cmf")
    data_cfg = data_config(cfg)
    data = prepare(data_cfg, build_readers(data_cfg), progress=False, log=lambda _: None)
    _, method = build_method(cfg)
    with pytest.raises(ConfigError, match="no source domain"):
        method.setup(data.target_only(), torch.device("cpu"), 0)


# ---------------------------------------------------------------------------- CMF
def test_cmf_user_factors_are_one_table_shared_by_both_domains(data_root):
    method, view = make(data_root, "cmf", "method.alpha=1.0")
    user = int(torch.nonzero(overlap_users(view))[0])
    source_items = torch.arange(5)
    before_users = method.model.user_rows().detach().clone()
    before_target = method.model.target_item_rows().detach().clone()
    loss = method.domain_loss(torch.full((5,), user), source_items, torch.ones(5), "source", 0.0)
    method.optimizer.zero_grad()
    (method.alpha * loss).backward()
    # alpha = 1: the target item rows get exactly zero gradient
    grad = method.model.embedding.weight.grad
    assert torch.count_nonzero(grad[view.num_users + method.model.num_source_items :]) == 0
    method.optimizer.step()
    # a source-only step moved the user row the target scores read
    with method.evaluation():
        users, items = method._scoring
        assert not torch.equal(users[user], before_users[user])
        torch.testing.assert_close(items, before_target, rtol=0, atol=0)
        scores = method.score_users(torch.tensor([user, 0]))
    torch.testing.assert_close(scores, users[[user, 0]] @ items.T)
    assert scores.shape == (2, view.num_items(view.target_domain))


# ---------------------------------------------------------------------------- EMCDR
def _tables(method):
    return [method.source_mf.embedding.weight.detach().clone(), method.target_mf.embedding.weight.detach().clone()]


def test_emcdr_mapping_trains_only_on_overlapping_users_with_frozen_tables(data_root, monkeypatch):
    method, view = make(data_root, "emcdr", "method.freeze_in_map=true")
    overlap = overlap_users(view)
    assert set(method.map_users.tolist()) == set(torch.nonzero(overlap).flatten().tolist())
    assert overlap.sum() < view.num_users  # the data has non-overlapping users
    seen, original = [], EMCDR.map_loss
    monkeypatch.setattr(EMCDR, "map_loss", lambda self, users: seen.append(users) or original(self, users))
    tables = _tables(method)
    mapper = [p.detach().clone() for p in method.mapper.parameters()]
    method.start_phase(Phase("map"))
    method.train_epoch(Phase("map"), 0, NOOP)
    assert seen and all(overlap[torch.cat(seen)].tolist())
    for before, after in zip(tables, _tables(method)):
        assert torch.equal(before, after)
    assert any(not torch.equal(b, p) for b, p in zip(mapper, method.mapper.parameters()))


def test_emcdr_refcode_mapping_moves_only_the_mapped_users_rows(data_root):
    method, view = make(data_root, "emcdr", "method.profile=refcode", "method.source_holdout=0")
    assert method.freeze_in_map is False and method.latent == "mf"
    before = _tables(method)
    method.start_phase(Phase("map"))
    method.train_epoch(Phase("map"), 0, NOOP)
    for b, a in zip(before, _tables(method)):
        changed = (b != a).any(1)
        mapped = torch.zeros(len(b), dtype=torch.bool)  # user rows of the mapped users; items never
        mapped[method.map_users] = True
        assert changed.any() and not (changed & ~mapped).any()


def test_emcdr_source_phase_leaves_the_target_tables_and_mapped_users_score_f_of_source(data_root):
    method, view = make(data_root, "emcdr")
    target_before = method.target_mf.embedding.weight.detach().clone()
    source_before = method.source_mf.embedding.weight.detach().clone()
    method.start_phase(Phase("source", select=False))
    stats = method.train_epoch(Phase("source", select=False), 0, NOOP)
    assert "source_holdout_mrr@10" in stats
    assert torch.equal(method.target_mf.embedding.weight, target_before)
    assert not torch.equal(method.source_mf.embedding.weight, source_before)
    method.start_phase(Phase("map"))
    u = view.num_users
    with method.evaluation():
        users, items = method._scoring
        mapped = method.mapper(method.source_mf.embedding.weight[:u])
        has_source = TwoDomains.from_data(view, "t").source.degree(u) > 0
        torch.testing.assert_close(users[has_source], mapped[has_source], rtol=0, atol=0)
        torch.testing.assert_close(users[~has_source], method.target_mf.embedding.weight[:u][~has_source], rtol=0, atol=0)
        assert items.shape == (view.num_items(view.target_domain), 64)


def test_emcdr_source_holdout_is_disjoint_from_the_source_training_rows(data_root):
    method, view = make(data_root, "emcdr", "method.source_holdout=0.3")
    users, items, _ = method.latent_rows["source"]
    train = set(zip(users.tolist(), items.tolist()))
    held = method._holdout["positives"]
    pairs = {(u, int(i)) for u in range(view.num_users)
             for i in held.indices[held.indptr[u]:held.indptr[u + 1]].tolist()}
    source_users, source_items = TwoDomains.from_data(view, "t").source.positives()
    assert pairs and not (pairs & train)
    assert train | pairs == set(zip(source_users.tolist(), source_items.tolist()))


# ---------------------------------------------------------------------------- CoNet
def test_conet_cross_connections_carry_gradient_between_domains():
    torch.manual_seed(0)
    towers = CrossTowers(8, [6, 4])
    x_s, x_t = torch.randn(5, 8), torch.randn(5, 8)
    cross = torch.ones(5, dtype=torch.bool)

    def source_grad_of_target_loss(mask):
        towers.zero_grad()
        _, logit_t = towers(x_s, x_t, mask)
        logit_t.sum().backward()
        grad = towers.source_layers[0].weight.grad
        return torch.zeros(1) if grad is None else grad

    assert source_grad_of_target_loss(cross).abs().sum() > 0
    assert source_grad_of_target_loss(torch.zeros(5, dtype=torch.bool)).abs().sum() == 0
    with torch.no_grad():
        for h in towers.cross:
            h.weight.zero_()
    assert source_grad_of_target_loss(cross).abs().sum() == 0
    # one H per layer, read by both directions: H moves both towers' outputs
    assert len(towers.cross) == 2 and all(h.bias is None for h in towers.cross)
    with torch.no_grad():
        towers.cross[0].weight.normal_()
    s1, t1 = towers(x_s, x_t, cross)
    with torch.no_grad():
        towers.cross[0].weight.mul_(2)
    s2, t2 = towers(x_s, x_t, cross)
    assert not torch.allclose(s1, s2) and not torch.allclose(t1, t2)


@pytest.mark.parametrize("profile,eval_cross", [("paper", "none"), ("refcode", "same_row")])
def test_conet_full_scores_equal_row_wise_predictions(data_root, profile, eval_cross):
    method, view = make(data_root, "conet", f"method.profile={profile}", f"method.eval_cross={eval_cross}")
    assert (method.model.user_s is method.model.user_t) == (profile == "paper")
    method.train_epoch(Phase("train"), 0, NOOP)
    n_items = view.num_items(view.target_domain)
    users = torch.arange(view.num_users)[:7]
    with method.evaluation():
        scores = method.score_users(users)
        rows = method.target_logits(users.repeat_interleave(n_items), torch.arange(n_items).repeat(len(users)))
        probs = method.predict_ctr(users, torch.zeros(len(users), dtype=torch.long))
    assert scores.shape == (7, n_items)
    torch.testing.assert_close(scores, rows.view(7, n_items), rtol=1e-5, atol=1e-6)
    assert ((probs > 0) & (probs < 1)).all()


def test_conet_same_user_partners_are_rows_of_the_same_user(data_root):
    method, view = make(data_root, "conet")
    source = TwoDomains.from_data(view, "t").source
    source_pairs = set(zip(source.user.tolist(), source.item.tolist()))
    positive_users, _ = source.positives()
    users, items, labels = next(method.target_rows.batches())
    partner_items, partner_labels, has = method.partners.draw(users, labels)
    assert torch.equal(has, torch.bincount(positive_users, minlength=view.num_users)[users] > 0)
    for u, i, y, ok in zip(users.tolist(), partner_items.tolist(), partner_labels.tolist(), has.tolist()):
        if ok:
            assert ((u, i) in source_pairs) == (y == 1.0)


# ---------------------------------------------------------------------------- BiTGCF
def test_bitgcf_transfer_mixes_exactly_the_overlapping_rows():
    e_s, e_t = torch.randn(4, 3), torch.randn(4, 3)
    overlap = torch.tensor([True, False, True, False])
    degree = torch.tensor([2.0, 3.0, 2.0, 0.0])
    layer = TransferLayer(overlap, degree, degree, lambda_source=1.0, lambda_target=1.0)
    out_s, out_t = layer(e_s, e_t)
    assert torch.equal(out_s[~overlap], e_s[~overlap]) and torch.equal(out_t[~overlap], e_t[~overlap])
    mean = (e_s + e_t) / 2  # equal degrees: the Laplace mix is the mean
    torch.testing.assert_close(out_s[overlap], ((e_s + mean) / 2)[overlap])
    torch.testing.assert_close(out_t[overlap], ((e_t + mean) / 2)[overlap])


def test_bitgcf_source_reaches_only_overlapping_users_target_rows(data_root):
    method, view = make(data_root, "bitgcf", "method.num_layers=1", "method.dropout=0.0")
    encoder = method.model
    encoder.eval()
    with torch.no_grad():
        (_, _), (users_a, items_a) = encoder(method.adj_source, method.adj_target)
        encoder.source.embedding.weight.add_(torch.randn_like(encoder.source.embedding.weight))
        (_, _), (users_b, items_b) = encoder(method.adj_source, method.adj_target)
    changed = (users_a != users_b).any(1)
    assert torch.equal(changed, encoder.transfer.overlap)
    assert torch.equal(items_a, items_b)
    # concat of layers 0..L, each layer block (after layer 0) of unit norm
    assert users_a.shape[1] == 64 * 2
    norms = users_a[:, 64:].norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))


# ---------------------------------------------------------------------------- XSimGCL
def test_xsimgcl_noise_keeps_the_sign_pattern_and_has_norm_eps():
    x = torch.randn(50, 16)
    x[0, :3] = 0.0
    delta = sign_noise(x, eps=0.2)
    nonzero = x != 0
    assert torch.equal(torch.sign(delta)[nonzero], torch.sign(x)[nonzero])
    assert (delta[~nonzero] == 0).all()
    torch.testing.assert_close(delta[1:].norm(dim=1), torch.full((49,), 0.2), rtol=0, atol=1e-6)


def test_xsimgcl_clean_pass_is_lightgcn_over_layers_one_to_l(data_root):
    method, view = make(data_root, "xsimgcl", "method.encoder.eps=0.0")
    encoder, adj = method.encoder, method.graph.adj
    assert isinstance(encoder, XSimGCLEncoder) and encoder.skip_layer0
    x0 = encoder.embedding.weight
    x1 = spmm(adj, x0)
    x2 = spmm(adj, x1)
    clean_users, clean_items = encoder(method.graph)
    torch.testing.assert_close(torch.cat([clean_users, clean_items]), (x1 + x2) / 2)
    users, items, view_u, view_i = encoder.perturbed(method.graph)  # eps = 0: the clean layers
    torch.testing.assert_close(torch.cat([users, items]), (x1 + x2) / 2)
    torch.testing.assert_close(torch.cat([view_u, view_i]), x1)


def test_xsimgcl_infonce_of_orthogonal_identical_views_is_the_closed_form():
    """Identical, mutually orthogonal unit views: each row's positive similarity is 1, every
    in-batch negative 0, so the loss is -log(e^(1/tau) / (e^(1/tau) + B - 1))."""
    from cdrbench.models.losses import info_nce

    batch, tau = 5, 0.15
    views = torch.eye(batch, 8, dtype=torch.float64)
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + batch - 1))
    assert float(info_nce(views, views, tau, intra_view_negatives=False)) == pytest.approx(expected, rel=1e-6)


def test_xsimgcl_contrastive_term_uses_unique_batch_nodes(data_root):
    method, _ = make(data_root, "xsimgcl")
    views = method.encoder.perturbed(method.graph)
    users, pos = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])
    once = method.contrastive_loss(users, pos, views)
    twice = method.contrastive_loss(users.repeat(2), pos.repeat(2), views)
    torch.testing.assert_close(once, twice)


# ---------------------------------------------------------------------------- options
def test_profiles_resolve_their_flags(data_root):
    cfg = configure(data_root, "conet", "method.profile=refcode")
    assert (cfg.method.share_user_emb, cfg.method.pairing, cfg.method.reg) == (False, "same_row", "cross_frobenius")
    cfg = configure(data_root, "emcdr")
    assert (cfg.method.latent, cfg.method.freeze_in_map, cfg.method.reg_form) == ("bpr", True, "squared_half")
    assert configure(data_root, "xsimgcl", "method.profile=refcode").method.reg == "propagated_frobenius"
    assert configure(data_root, "bitgcf", "eval.tasks=[ctr]").method.supervision == "labels"


@pytest.mark.parametrize("cls,kwargs,key", [
    (CMF, {"reg_form": "l1"}, "method.reg_form"),
    (CMF, {"alpha": 1.5}, "method.alpha"),
    (EMCDR, {"latent": "svd"}, "method.latent"),
    (EMCDR, {"epochs": {"pretrain": 3}}, "method.epochs"),
    (CoNet, {"pairing": "position"}, "method.pairing"),
    (CoNet, {"pairing": "same_user", "eval_cross": "same_row"}, "method.eval_cross"),
    (BiTGCF, {"transfer": "none"}, "method.transfer"),
    (BiTGCF, {"supervision": "clicks"}, "method.supervision"),
])
def test_bad_options_name_the_key(cls, kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        cls(optimizer=torch.optim.Adam, **kwargs)


def test_xsimgcl_bad_reg_names_the_key():
    with pytest.raises(ConfigError, match=r"method\.reg"):
        XSimGCL(encoder=XSimGCLEncoder, optimizer=torch.optim.Adam, reg="l1")


# ---------------------------------------------------------------------------- determinism + resume
@pytest.mark.parametrize("method", METHODS)
def test_interrupted_run_resumes_to_the_uninterrupted_result(data_root, tmp_path, monkeypatch, method):
    """Determinism and resume at once: an uninterrupted run and a run crashed at its second epoch,
    then resumed from last.pt, give identical metrics and losses (EMCDR crashes in its target phase)."""
    overrides = ["trainer.max_epochs=2", "seed=3", "eval.tasks=[topn,ctr]"]
    if method == "emcdr":
        overrides += ["method.epochs.source=2", "method.epochs.target=2", "method.epochs.map=2"]
    reference = run_training(configure(data_root, method, *overrides, output_root=tmp_path), tmp_path / "reference")
    cls = type(build_method(configure(data_root, method))[1])
    original = cls.train_epoch
    crash_at = ("target", 1) if method == "emcdr" else ("train", 1)

    def crash(self, phase, epoch, progress):
        if (phase.name, epoch) == crash_at:
            raise KeyboardInterrupt("simulated crash")
        return original(self, phase, epoch, progress)

    monkeypatch.setattr(cls, "train_epoch", crash)
    with pytest.raises(KeyboardInterrupt):
        run_training(configure(data_root, method, *overrides, output_root=tmp_path), tmp_path / "crashed")
    monkeypatch.setattr(cls, "train_epoch", original)
    resumed = run_training(configure(data_root, method, *overrides, "trainer.resume=true", output_root=tmp_path),
                           tmp_path / "resumed")
    assert resumed["resumed_from"] == str(tmp_path / "crashed")
    assert resumed["test"] == reference["test"] and resumed["valid"] == reference["valid"]
    assert 0.0 <= reference["test"]["auc"] <= 1.0 and reference["test"]["ndcg@20"] >= 0.0
    history = pd.read_csv(tmp_path / "resumed" / "history.csv")
    expected = pd.read_csv(tmp_path / "reference" / "history.csv")
    column = "map_loss" if method == "emcdr" else "loss"
    pd.testing.assert_series_equal(history[column], expected[column])
    if method == "emcdr":
        assert history["phase"].tolist() == ["source"] * 2 + ["target"] * 2 + ["map"] * 2
    assert json.loads((tmp_path / "resumed" / "run.json").read_text())["status"] == "finished"


def test_a_bad_option_from_the_command_line_is_one_line_naming_the_key(data_root):
    with pytest.raises(ConfigError) as caught:
        build_method(configure(data_root, "cmf", "method.reg_form=l1"))
    assert str(caught.value) == "method.reg_form='l1' is not one of ['squared_half', 'frobenius']"

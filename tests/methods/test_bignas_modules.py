"""BiGNAS building blocks: ops, mixed op, supernets, fusion, predictor, perceptron (spec §2, §3, §6, §10.4-5)."""

import pytest
import torch
from torch_geometric.nn import GATConv, GATv2Conv, GCNConv, LGConv, SAGEConv

from cdrbench.data.graph import Graph, bipartite_edge_index
from cdrbench.methods.bignas.ops import OPS, make_op
from cdrbench.methods.bignas.perceptron import ImportancePerceptron, train_union_edge_index, uniform_weights
from cdrbench.methods.bignas.supernet import (
    CrossDomainSupernet,
    CTRPredictor,
    MixedOp,
    Supernet,
    pair_repr,
)

ALL_OPS = ["gcn", "gat", "gatv2", "sage", "lightgcn", "linear"]
U, I_S, I_T, D = 12, 9, 7, 8


def random_graph(num_users, num_items, num_edges, seed, isolated_items=0):
    """Random bipartite graph; parallel edges kept; the last ``isolated_items`` items get no edge."""
    gen = torch.Generator().manual_seed(seed)
    users = torch.randint(0, num_users, (num_edges,), generator=gen)
    items = torch.randint(0, num_items - isolated_items, (num_edges,), generator=gen)
    return Graph.from_edge_index(bipartite_edge_index(users, items, num_users), num_users + num_items, num_users)


@pytest.fixture
def graphs():
    return random_graph(U, I_S, 40, seed=1), random_graph(U, I_T, 30, seed=2, isolated_items=2)


# ----------------------------------------------------------------------------- ops


def test_registry_and_unknown_op():
    assert set(OPS) == set(ALL_OPS)
    with pytest.raises(ValueError, match="valid ops.*gcn"):
        make_op("gin", D, D)
    with pytest.raises(ValueError, match="valid ops"):
        MixedOp(["gcn", "nope"], D, D)
    with pytest.raises(ValueError, match="lightgcn"):
        make_op("lightgcn", D, D + 1)


@pytest.mark.parametrize("op", ALL_OPS)
def test_every_op_maps_width(graphs, op):
    g = graphs[1]
    out = make_op(op, D, D if op == "lightgcn" else 5)(torch.randn(g.num_nodes, D), g)
    assert out.shape == (g.num_nodes, D if op == "lightgcn" else 5)
    assert torch.isfinite(out).all()


def test_gcn_op_equals_gcnconv_on_edge_index(graphs):
    g = graphs[1]  # has isolated items and parallel edges
    torch.manual_seed(0)
    op = make_op("gcn", D, 5)
    ref = GCNConv(D, 5)
    ref.load_state_dict(op.conv.state_dict())
    with torch.no_grad():
        ref.bias.normal_()  # non-zero bias so it is checked too
        op.conv.bias.copy_(ref.bias)
    x = torch.randn(g.num_nodes, D)
    torch.testing.assert_close(op(x, g), ref(x, g.edge_index), atol=1e-6, rtol=1e-5)


def test_lightgcn_op_equals_lgconv_on_edge_index(graphs):
    g = graphs[1]
    x = torch.randn(g.num_nodes, D)
    torch.testing.assert_close(make_op("lightgcn", D, D)(x, g), LGConv(normalize=True)(x, g.edge_index), atol=1e-6, rtol=1e-5)
    assert list(make_op("lightgcn", D, D).parameters()) == []


@pytest.mark.parametrize("op,conv_cls", [("gat", GATConv), ("gatv2", GATv2Conv), ("sage", SAGEConv)])
def test_message_passing_ops_wrap_pyg_on_edge_index(graphs, op, conv_cls):
    g = graphs[0]
    m = make_op(op, D, 5, sage_aggr="max")
    kwargs = {"aggr": "max"} if op == "sage" else {"heads": 1, "add_self_loops": False}
    ref = conv_cls(D, 5, **kwargs)
    ref.load_state_dict(m.conv.state_dict())
    x = torch.randn(g.num_nodes, D)
    torch.testing.assert_close(m(x, g), ref(x, g.edge_index))
    if op == "sage":
        assert m.conv.aggr == "max"
        assert make_op("sage", D, 5).conv.aggr == "mean"  # default


# ----------------------------------------------------------------------------- mixed op


def _mixed(space, dropout=0.0):
    torch.manual_seed(0)
    return MixedOp(space, D, D, dropout=dropout, batch_norm=False, sage_aggr="mean")


def test_mixed_op_uniform_alpha_is_mean_of_ops(graphs):
    g = graphs[0]
    m = _mixed(ALL_OPS).eval()
    x = torch.randn(g.num_nodes, D)
    weights = torch.softmax(torch.zeros(len(ALL_OPS)), 0)
    expected = torch.stack([m.ops[o](x, g) for o in ALL_OPS]).mean(0)
    torch.testing.assert_close(m(x, g, weights), expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("chosen", ALL_OPS)
def test_mixed_op_one_hot_alpha_is_that_op(graphs, chosen):
    g = graphs[0]
    m = _mixed(ALL_OPS).eval()
    x = torch.randn(g.num_nodes, D)
    alpha = torch.zeros(len(ALL_OPS))
    alpha[ALL_OPS.index(chosen)] = 50.0
    torch.testing.assert_close(m(x, g, torch.softmax(alpha, 0)), m.ops[chosen](x, g), atol=1e-5, rtol=0)


@pytest.mark.parametrize("op", ALL_OPS)
def test_one_op_space_is_exactly_the_op(graphs, op):
    g = graphs[0]
    net = Supernet([op], num_layers=2, dim=D, dropout=0.0)
    assert net.arch_parameters() == []
    x = torch.randn(g.num_nodes, D)
    outs = net(x, g)
    assert torch.equal(outs[1], net.layers[0].ops[op](x, g))
    assert torch.equal(outs[2], net.layers[1].ops[op](outs[1], g))


def test_dropout_is_per_op_before_mixing(graphs):
    g = graphs[0]
    m = _mixed(["linear", "lightgcn"], dropout=0.5).train()
    x = torch.randn(g.num_nodes, D)
    w = torch.tensor([0.5, 0.5])
    torch.manual_seed(3)
    out = m(x, g, w)
    torch.manual_seed(3)
    a = torch.nn.functional.dropout(m.ops["linear"](x, g), 0.5)
    b = torch.nn.functional.dropout(m.ops["lightgcn"](x, g), 0.5)
    torch.testing.assert_close(out, 0.5 * a + 0.5 * b)


def test_batch_norm_option(graphs):
    m = MixedOp(["linear", "gcn"], D, D, dropout=0.0, batch_norm=True)
    assert all(isinstance(m.norms[o], torch.nn.BatchNorm1d) for o in ["linear", "gcn"])
    assert m(torch.randn(graphs[0].num_nodes, D), graphs[0], torch.tensor([0.5, 0.5])).shape == (graphs[0].num_nodes, D)


# ----------------------------------------------------------------------------- supernet


def test_alpha_init_and_op_weights():
    torch.manual_seed(0)
    net = Supernet(ALL_OPS, num_layers=2, dim=D)
    assert isinstance(net.alpha, torch.nn.Parameter) and net.alpha.shape == (2, len(ALL_OPS))
    assert 0 < net.alpha.abs().max() < 5e-3  # 1e-3 * N(0, 1)
    w = net.op_weights()
    torch.testing.assert_close(w.sum(-1), torch.ones(2))
    assert (w - 1 / len(ALL_OPS)).abs().max() < 1e-3


def test_mix_alpha_is_fixed_and_untrainable(graphs):
    net = Supernet(ALL_OPS, num_layers=2, dim=D, dropout=0.0, learn_alpha=False)
    assert net.arch_parameters() == []
    assert not any(p is net.alpha for p in net.parameters())
    assert not net.alpha.requires_grad
    before = net.alpha.clone()
    opt = torch.optim.AdamW(net.parameters(), lr=0.1, weight_decay=0.1)
    loss = net(torch.randn(graphs[0].num_nodes, D), graphs[0])[-1].pow(2).sum()
    loss.backward()
    opt.step()
    assert torch.equal(net.alpha, before) and torch.equal(before, torch.zeros(2, len(ALL_OPS)))
    torch.testing.assert_close(net.op_weights(), torch.full((2, len(ALL_OPS)), 1 / len(ALL_OPS)))


def test_learned_alpha_moves_under_optimizer(graphs):
    torch.manual_seed(0)
    net = Supernet(ALL_OPS, num_layers=2, dim=D, dropout=0.0)
    before = net.alpha.detach().clone()
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    net(torch.randn(graphs[0].num_nodes, D), graphs[0])[-1].pow(2).sum().backward()
    opt.step()
    assert not torch.equal(net.alpha.detach(), before)


def test_share_op_weights_across_layers():
    shared = Supernet(ALL_OPS, num_layers=2, dim=D, share_op_weights_across_layers=True)
    separate = Supernet(ALL_OPS, num_layers=2, dim=D)
    assert shared.layers[0].ops is shared.layers[1].ops
    assert shared.alpha.shape == (2, len(ALL_OPS))  # alpha stays per layer
    n_shared = sum(p.numel() for p in shared.parameters())
    n_sep = sum(p.numel() for p in separate.parameters())
    n_ops = sum(p.numel() for p in separate.layers[1].parameters())
    assert n_shared == n_sep - n_ops


def _model(**kw):
    torch.manual_seed(0)
    args = dict(embedding_dim=D, hidden_dim=D, num_layers=2, space=ALL_OPS, dropout=0.0)
    args.update(kw)
    return CrossDomainSupernet(U, {"source": I_S, "target": I_T}, **args)


def test_embeddings_init_and_shapes(graphs):
    m = _model(embedding_dim=16, hidden_dim=16)
    assert m.user_embedding.weight.std().item() == pytest.approx(0.01, rel=0.3)
    reps_s, reps_t = m(*graphs)
    assert reps_s.shape == (U + I_S, 16 + 2 * 16) and reps_t.shape == (U + I_T, 16 + 2 * 16)
    assert m.out_dim == 48
    # layer-0 block is the raw embedding (NGCF readout)
    assert torch.equal(reps_s[:U, :16], m.user_embedding.weight)
    assert torch.equal(reps_t[U:, :16], m.item_embeddings["target"].weight)
    # tuple form of num_items
    assert CrossDomainSupernet(U, (I_S, I_T), embedding_dim=D, hidden_dim=D).num_source_items == I_S


def test_graph_size_mismatch_raises(graphs):
    with pytest.raises(ValueError, match="target graph"):
        _model()(graphs[0], graphs[0])


def test_user_fusion_replaces_user_rows_of_both_domains(graphs):
    m = _model(space=["gcn", "sage", "linear"]).eval()
    gs, gt = graphs
    reps_s, reps_t = m(gs, gt)
    for layer in range(3):
        block = slice(layer * D, (layer + 1) * D)
        assert torch.equal(reps_s[:U, block], reps_t[:U, block])
    # items keep their domain's output: same-size prefix still differs
    assert not torch.allclose(reps_s[U : U + I_T, D:], reps_t[U:, D:])
    # the fused rows are W_1 [x_S^(1)[users] || x_T^(1)[users]] + b_1, no activation
    ns, nt = m.supernets["source"], m.supernets["target"]
    xs1 = ns.layer_forward(0, m.node_features("source"), gs)
    xt1 = nt.layer_forward(0, m.node_features("target"), gt)
    u1 = m.fusion[0](torch.cat([xs1[:U], xt1[:U]], -1))
    torch.testing.assert_close(reps_t[:U, D : 2 * D], u1)
    torch.testing.assert_close(reps_s[U:, D : 2 * D], xs1[U:])  # item rows untouched by fusion
    assert (u1 < 0).any()  # no activation after fusion


class _Untouchable:
    def __getattr__(self, name):
        raise AssertionError(f"source graph touched: .{name}")


def test_no_source_model_has_no_source_parts(graphs):
    full = _model()
    tgt = _model(use_source=False)
    names = [n for n, _ in tgt.named_parameters()]
    assert not any("source" in n or "fusion" in n for n in names)
    assert tgt.fusion is None and tgt.domains == ["target"]
    src_params = (
        sum(p.numel() for p in full.supernets["source"].parameters())
        + full.item_embeddings["source"].weight.numel()
        + sum(p.numel() for p in full.fusion.parameters())
    )
    assert sum(p.numel() for p in tgt.parameters()) == sum(p.numel() for p in full.parameters()) - src_params
    none_s, reps_t = tgt(None, graphs[1])
    assert none_s is None and reps_t.shape == (U + I_T, full.out_dim)
    _, reps_t2 = tgt(_Untouchable(), graphs[1])
    torch.testing.assert_close(reps_t, reps_t2)
    assert set(tgt.alpha_dict()) == {"target"}
    # a plain target item count is accepted
    assert CrossDomainSupernet(U, I_T, embedding_dim=D, hidden_dim=D, use_source=False).num_target_items == I_T


def test_parameter_groups_and_alpha_dict(graphs):
    m = _model()
    arch = m.arch_parameters()
    assert len(arch) == 2 and all(a.shape == (2, len(ALL_OPS)) for a in arch)
    ids = {id(p) for p in m.weight_parameters()}
    assert not ids & {id(a) for a in arch}
    assert len(m.shared_parameters()) == len(m.weight_parameters()) + 2
    ad = m.alpha_dict()
    assert set(ad) == {"source", "target"}
    assert len(ad["source"]) == 2 and len(ad["source"][0]) == len(ALL_OPS)
    assert sum(ad["target"][1]) == pytest.approx(1.0)
    assert _model(learn_alpha=False).arch_parameters() == []
    assert _model(space=["gat"]).arch_parameters() == []


def test_pair_repr_and_predictors(graphs):
    m = _model()
    reps_s, reps_t = m(*graphs)
    users, items = torch.tensor([0, 3, 11]), torch.tensor([0, 6, 2])
    h = pair_repr(reps_t, users, items, U)
    assert h.shape == (3, 2 * m.out_dim)
    assert torch.equal(h[1, m.out_dim :], reps_t[U + 6])
    mlp = CTRPredictor(2 * m.out_dim, "mlp", [64])
    assert [type(x).__name__ for x in mlp.net] == ["Linear", "ReLU", "Linear"] and mlp.net[0].out_features == 64
    assert mlp(h).shape == (3,)
    leaky = CTRPredictor(2 * m.out_dim, "linear_leaky")
    z = leaky.net[0](h).squeeze(-1)
    torch.testing.assert_close(leaky(h), torch.nn.functional.leaky_relu(z))
    with torch.no_grad():
        leaky.net[0].bias.fill_(-5.0)
    assert (torch.sigmoid(leaky(h)) > 0.45).all()  # negative logits squashed towards 0.5
    with pytest.raises(ValueError, match="mlp"):
        CTRPredictor(4, "gbdt")


def test_one_propagation_serves_many_batches(graphs):
    m = _model(dropout=0.5).train()
    head = CTRPredictor(2 * m.out_dim)
    reps_s, reps_t = m(*graphs)
    loss = head(pair_repr(reps_t, torch.tensor([0, 1]), torch.tensor([0, 1]), U)).sum() + head(
        pair_repr(reps_t, torch.tensor([2, 3]), torch.tensor([2, 3]), U)
    ).sum() + head(pair_repr(reps_s, torch.tensor([4]), torch.tensor([8]), U)).sum()
    loss.backward()
    assert m.user_embedding.weight.grad is not None


# ----------------------------------------------------------------------------- perceptron


def _perceptron_inputs(graphs, form):
    gs, gt = graphs
    torch.manual_seed(0)
    model = _model()
    reps_s, _ = model(gs, gt)
    edge_index = train_union_edge_index(gs, gt) if form == "three_level" else gs.edge_index
    users = gs.edge_index[0, :10]
    items = gs.edge_index[1, :10] - U
    kw = dict(
        users=users,
        source_items=items,
        user_emb=model.user_embedding.weight,
        source_item_emb=model.item_embeddings["source"].weight,
        edge_index=edge_index,
        target_item_emb=model.item_embeddings["target"].weight if form == "three_level" else None,
        source_item_reps=reps_s[U:] if form == "three_level" else None,
    )
    return model, kw


def _perceptron(form):
    torch.manual_seed(1)
    return ImportancePerceptron(form, U, I_S, I_T, rep_dim=D + 2 * D, emb_dim=D)


def test_train_union_edge_index(graphs):
    gs, gt = graphs
    ei = train_union_edge_index(gs, gt)
    assert ei.shape[1] == gs.edge_index.shape[1] + gt.edge_index.shape[1]
    tgt = ei[:, gs.edge_index.shape[1] :]
    item_nodes = tgt[tgt >= U]
    assert item_nodes.min() >= U + I_S and item_nodes.max() < U + I_S + I_T
    assert torch.equal(tgt[tgt < U], gt.edge_index[gt.edge_index < U])


@pytest.mark.parametrize("form", ["three_level", "item_only"])
@pytest.mark.parametrize("gamma_s", [1.0, 0.37, -0.5])
def test_perceptron_weights_nonnegative_and_sum_to_relu_gamma(graphs, form, gamma_s):
    _, kw = _perceptron_inputs(graphs, form)
    p = _perceptron(form)
    assert p.domain_weight.item() == 1.0  # gamma_S starts at 1
    with torch.no_grad():
        p.domain_weight.fill_(gamma_s)
    w = p(**kw)
    assert w.shape == (10,)
    assert (w >= 0).all()
    assert w.sum().item() == pytest.approx(max(gamma_s, 0.0), abs=1e-6)


def test_perceptron_three_level_parts():
    p = _perceptron("three_level")
    assert [m.in_features for m in p.item_mlp if isinstance(m, torch.nn.Linear)] == [3 * D, 16]
    assert [m.in_features for m in p.pair_mlp if isinstance(m, torch.nn.Linear)] == [32, 16]
    assert len(p.convs) == 2 and all(c.aggr == "max" and c.out_channels == 16 for c in p.convs)
    q = _perceptron("item_only")
    assert q.item_mlp is None and q.item_score.in_features == 16


def test_item_only_weights_near_uniform_at_init(graphs):
    _, kw = _perceptron_inputs(graphs, "item_only")
    w = _perceptron("item_only")(**kw)
    assert (w * 10 - 1).abs().max() < 5e-3  # spec §3.2: within ±0.5% of 1/|B|


def test_uniform_weights():
    w = uniform_weights(7)
    assert torch.equal(w, torch.full((7,), 1 / 7))
    assert w.sum().item() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        uniform_weights(0)


@pytest.mark.parametrize("form", ["three_level", "item_only"])
def test_detach_inputs_blocks_gradient_into_embeddings(graphs, form):
    model, kw = _perceptron_inputs(graphs, form)
    p = _perceptron(form)
    per_example = torch.arange(10, dtype=torch.float32)  # constant "losses": only the gamma path remains
    tables = [model.user_embedding.weight, model.item_embeddings["source"].weight]

    grads = torch.autograd.grad((p(**kw) * per_example).sum(), tables, retain_graph=True, allow_unused=True)
    assert all(g is not None and g.abs().sum() > 0 for g in grads)

    loss = (p(**kw, detach_inputs=True) * per_example).sum()
    assert loss.requires_grad  # phi still gets a gradient
    grads = torch.autograd.grad(loss, tables, allow_unused=True)
    assert all(g is None for g in grads)


@pytest.mark.parametrize("form", ["three_level", "item_only"])
def test_perceptron_double_backward_through_sage_max(graphs, form):
    model, kw = _perceptron_inputs(graphs, form)
    p = _perceptron(form)
    emb = model.user_embedding.weight
    loss = (p(**kw) * torch.arange(10.0)).sum() + emb.pow(2).sum() * p.domain_weight
    (g,) = torch.autograd.grad(loss, [emb], create_graph=True)
    mixed = torch.autograd.grad((g * torch.randn_like(g)).sum(), list(p.parameters()), allow_unused=True)
    mixed = [m for m in mixed if m is not None]
    assert mixed and all(torch.isfinite(m).all() for m in mixed)
    assert sum(m.abs().sum() for m in mixed) > 0


def test_sage_mean_through_sparse_matmul_equals_sageconv(graphs):
    """The fast mean path (CSR matmul) is numerically SAGEConv(aggr="mean") on edge_index,
    including gradients."""
    torch.manual_seed(0)
    for g in graphs:  # the second graph has isolated items (mean of nothing = 0)
        op = make_op("sage", D, 5, sage_aggr="mean")
        reference = SAGEConv(D, 5, aggr="mean")
        reference.load_state_dict(op.conv.state_dict())
        x = torch.randn(g.num_nodes, D, requires_grad=True)
        ours = op(x, g)
        theirs = reference(x, g.edge_index)
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
        (grad_ours,) = torch.autograd.grad(ours.pow(2).sum(), x)
        (grad_theirs,) = torch.autograd.grad(theirs.pow(2).sum(), x)
        torch.testing.assert_close(grad_ours, grad_theirs, atol=1e-5, rtol=1e-5)

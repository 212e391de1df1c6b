"""HAGO's pre-training pieces: the three objectives against hand computations, BGRL's exact EMA
target, the shared augmentations and the anchor order (spec §4, §11 test 5)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from cdrbench.methods.hago.coordinators import NodeLayout, build_unified_graph
from cdrbench.methods.hago.encoders import GCN, LightGCN
from cdrbench.methods.hago.pretrain import (
    BGRL, COSTA, GRACE, GraphAugmentation, GraphPart, MultiDomainPretraining, anchor_batches,
)


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def _hand_info_nce(a, b, tau, intra):
    total = 0.0
    for i in range(len(a)):
        denominator = sum(math.exp(_cos(a[i], b[j]) / tau) for j in range(len(b)))
        if intra:
            denominator += sum(math.exp(_cos(a[i], a[j]) / tau) for j in range(len(a)) if j != i)
        total += -math.log(math.exp(_cos(a[i], b[i]) / tau) / denominator)
    return total / len(a)


Z1 = [[1.0, 0.0], [0.6, 0.8], [-1.0, 0.5]]
Z2 = [[0.9, 0.1], [0.0, 1.0], [-0.5, -0.5]]


def test_grace_loss_equals_a_hand_computation_on_three_nodes():
    grace = GRACE(2, tau=0.5)
    grace.project = torch.nn.Identity()  # isolate the loss from the projection head
    loss = grace(torch.tensor(Z1), torch.tensor(Z2), generator=None)
    expected = 0.5 * (_hand_info_nce(Z1, Z2, 0.5, True) + _hand_info_nce(Z2, Z1, 0.5, True))
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_costa_sketches_then_contrasts_without_intra_view_negatives():
    costa = COSTA(2, tau=0.5, ratio=0.5)
    generator = torch.Generator().manual_seed(0)
    assert costa.sketch(7, generator, "cpu").shape == (3, 7)  # floor(0.5 * 7) x B
    big = costa.sketch(4000, generator, "cpu")
    assert big.std().item() == pytest.approx(1 / math.sqrt(2000), rel=0.02)  # N(0, 1/k)
    costa.project = torch.nn.Identity()
    p = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [1.0, 1.0, 0.0]])
    costa.sketch = lambda rows, generator, device: p
    loss = costa(torch.tensor(Z1), torch.tensor(Z2), generator=None)
    s1, s2 = (p @ torch.tensor(Z1)).tolist(), (p @ torch.tensor(Z2)).tolist()
    expected = 0.5 * (_hand_info_nce(s1, s2, 0.5, False) + _hand_info_nce(s2, s1, 0.5, False))
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_bgrl_loss_is_zero_for_identical_views_and_an_identity_predictor():
    bgrl = BGRL(4, dropout=0.0)
    bgrl.predictor = torch.nn.Identity()
    z = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    loss = bgrl(z, z.clone(), None, targets=(z.clone(), z.clone()))
    assert float(loss) == pytest.approx(0.0, abs=1e-6)
    other = bgrl(z, z.flip(0), None, targets=(z.clone(), z.clone()))
    assert float(other) > 0.01


def _layout_and_graph():
    layout = NodeLayout(4, ["s", "t"], ["t", "s"], {"s": 3, "t": 2}, pad_node=False, num_coords=4)
    users = {"s": torch.tensor([0, 1, 2, 3, 0]), "t": torch.tensor([1, 2, 3, 3])}
    items = {"s": torch.tensor([0, 1, 2, 2, 1]), "t": torch.tensor([0, 1, 0, 1])}
    inter = {d: (users[d], layout.item_nodes(d, items[d])) for d in users}
    members = {d: (torch.unique(u), torch.unique(i)) for d, (u, i) in inter.items()}
    return layout, build_unified_graph(layout, inter, members, "heterogeneous", 1)


def test_bgrl_target_encoder_is_an_exact_ema_of_the_online_encoder():
    torch.manual_seed(0)
    layout, graph = _layout_and_graph()
    model = MultiDomainPretraining(layout, [GraphPart(graph)], GCN(8, 2), BGRL(8, 0.0), GraphAugmentation(0.3, 0.1),
                                   embedding_dim=8, ema=0.9)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    expected = [p.detach().clone() for p in model.encoder.parameters()]  # the copy starts equal
    generator = torch.Generator().manual_seed(1)
    anchors = torch.arange(layout.coord_start)
    for _ in range(3):
        online = [p.detach().clone() for p in model.encoder.parameters()]
        expected = [0.9 * t + 0.1 * o for t, o in zip(expected, online)]
        loss = model(anchors, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for target, value in zip(model.target_encoder.parameters(), expected):
            torch.testing.assert_close(target, value, rtol=0, atol=1e-6)
            assert not target.requires_grad
    assert any(not torch.equal(t, o) for t, o in zip(model.target_encoder.parameters(), model.encoder.parameters()))
    # a parameter-free encoder is its own EMA: no copy, the target is the stop-gradient output
    light = MultiDomainPretraining(layout, [GraphPart(graph)], LightGCN(2), BGRL(8, 0.0), GraphAugmentation(), 8)
    assert light.target_encoder is None


def test_edge_removal_is_per_directed_entry_or_symmetric_and_masking_zeroes_columns():
    _, graph = _layout_and_graph()
    weight = torch.ones(graph.pattern.nnz)
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([GraphAugmentation(0.3, 0.0).drop_edges(graph, weight, generator) for _ in range(400)])
    assert draws.mean().item() == pytest.approx(0.7, abs=0.02)
    reverse = graph.pattern.transpose_perm
    assert (draws != draws[:, reverse]).any()  # directions dropped independently: views are asymmetric
    symmetric = GraphAugmentation(0.3, 0.0, edge_drop_symmetric=True)
    for _ in range(20):
        kept = symmetric.drop_edges(graph, weight, generator)
        assert torch.equal(kept, kept[reverse])
    x = torch.ones(10, 50)
    masked = GraphAugmentation(0.0, 0.5).mask_features(x, generator)
    columns = masked[0] == 0
    assert 5 < int(columns.sum()) < 45 and torch.equal(masked == 0, columns.expand_as(masked))


def test_anchors_are_users_then_items_never_coordinators():
    layout = NodeLayout(5, ["s", "t"], ["t", "s"], {"s": 3, "t": 4}, pad_node=True, num_coords=8)
    batches = anchor_batches(layout, 4, "users_then_items", torch.Generator().manual_seed(0))
    flat = torch.cat(batches)
    user_rows = layout.user_rows  # 5 users + the pad user
    assert sorted(flat.tolist()) == list(range(layout.coord_start))  # every user and item once, pads too
    assert [len(b) for b in batches] == [4, 2, 4, 4]  # users (6) in batches of 4, then items (8)
    assert all(int(b.max()) < user_rows for b in batches[:2]) and all(int(b.min()) >= user_rows for b in batches[2:])
    mixed = anchor_batches(layout, 4, "mixed", torch.Generator().manual_seed(0))
    assert sorted(torch.cat(mixed).tolist()) == list(range(layout.coord_start))
    assert any(int(b.max()) >= user_rows and int(b.min()) < user_rows for b in mixed)
    # a last batch of one anchor has no negatives: skipped
    odd = NodeLayout(4, ["s", "t"], ["t", "s"], {"s": 2, "t": 2}, pad_node=True, num_coords=0)
    assert [len(b) for b in anchor_batches(odd, 4, "users_then_items", torch.Generator())] == [4, 4]


def test_a_pretraining_step_moves_tables_coordinators_and_heads():
    torch.manual_seed(0)
    layout, graph = _layout_and_graph()
    model = MultiDomainPretraining(layout, [GraphPart(graph)], LightGCN(2), GRACE(8), GraphAugmentation(), 8)
    before = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loss = model(torch.arange(layout.coord_start), torch.Generator().manual_seed(0))
    loss.backward()
    assert model.coordinators.embedding.weight.grad.abs().sum() > 0  # through the weights and as nodes
    optimizer.step()
    for name in ("user_embedding.weight", "item_embedding.weight", "coordinators.embedding.weight",
                 "objective.project.0.weight"):
        assert not torch.equal(before[name], model.state_dict()[name]), name

"""HAGO's unified graph: the coordinator weights of Eq. 3, the block structure of Eq. 4, the
variants' wirings, and the encoders' propagation against dense references (spec §11 tests 3-4)."""

from __future__ import annotations

import math

import pytest
import torch
from torch_geometric.nn import GCNConv

from cdrbench.methods.hago.coordinators import (
    HeterogeneousGraphCoordinators, NodeLayout, build_unified_graph, coordinator_weight_table,
)
from cdrbench.methods.hago.encoders import GCN, LightGCN, WeightedGraph
from cdrbench.models.sparse import CSRPattern

# two domains, 3 users, K = 1: user 0 only in s, user 1 in both, user 2 only in t;
# items s0, s1 in s, t0 in t (t1 exists but has no training row)
USERS = {"s": torch.tensor([0, 0, 1, 1]), "t": torch.tensor([1, 2, 2])}
ITEMS = {"s": torch.tensor([0, 1, 1, 1]), "t": torch.tensor([0, 0, 0])}  # (1, s1) and (2, t0) repeat


def tiny(wiring: str = "heterogeneous", k: int = 1, pad: bool = True, homo_links: str = "complete"):
    domains = ["s", "t"]
    coords = 0 if wiring == "none" else 2 * len(domains) * k
    layout = NodeLayout(3, domains, ["t", "s"], {"s": 2, "t": 2}, pad_node=pad, num_coords=coords)
    interactions, members = {}, {}
    for d in domains:
        item_nodes = layout.item_nodes(d, ITEMS[d])
        interactions[d] = (USERS[d], item_nodes)
        members[d] = (torch.unique(USERS[d]), torch.unique(item_nodes))
    return layout, build_unified_graph(layout, interactions, members, wiring, k, homo_links), members


def dense(graph, weight=None) -> torch.Tensor:
    weight = graph.weights() if weight is None else weight
    out = torch.zeros(graph.layout.num_nodes, graph.layout.num_nodes)
    out[graph.pattern.row, graph.pattern.col] = weight
    return out


def neighbours(graph, node: int) -> set[int]:
    return set(graph.pattern.col[graph.pattern.row == node].tolist())


def test_node_layout_puts_pads_after_users_and_items_and_coordinators_last():
    layout, graph, _ = tiny()
    # users 0-2, pad user 3, items t0 t1 s0 s1 = 4..7, pad item 8, coordinators 9..12
    assert layout.user_rows == 4 and layout.item_rows == 5 and layout.coord_start == 9 and layout.num_nodes == 13
    assert layout.item_block("t").tolist() == [4, 5] and layout.item_block("s").tolist() == [6, 7]
    assert neighbours(graph, 3) == set() and neighbours(graph, 8) == set()  # pads are isolated


def test_adaptive_weights_are_relu_cosine_by_hand_and_follow_the_embeddings():
    layout, graph, _ = tiny()
    coords = HeterogeneousGraphCoordinators(layout.num_coords, 2)
    # coordinator ids: user coords s=0, t=1; item coords s=2, t=3
    with torch.no_grad():
        coords.embedding.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 2.0], [1.0, 0.0], [-1.0, 0.0]]))
    x = torch.zeros(layout.coord_start, 2)
    x[0], x[1], x[2] = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 3.0]), torch.tensor([-1.0, -1.0])
    x[6], x[7], x[4] = torch.tensor([1.0, 1.0]), torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0])
    weights = coords.pair_weights(graph, x)
    by_pair = {}
    start = 0
    for block in graph.blocks:
        for n, node in enumerate(block.nodes.tolist()):
            for c, coord in enumerate(block.coords.tolist()):
                by_pair[(node, coord)] = float(weights[start + n * len(block.coords) + c].detach())
        start += block.num_pairs
    r = 1 / math.sqrt(2)
    expected = {
        (0, 0): r, (1, 0): r,                  # users of s with the s user coordinator (1, 1)
        (1, 1): 1.0, (2, 1): 0.0,              # users of t with (0, 2): user 2 = (-1, -1) has cos < 0
        (6, 2): r, (7, 2): 0.0,                # items of s with (1, 0): s1 = (0, 1) is orthogonal
        (4, 3): 0.0,                           # t0 = (1, 0) against (-1, 0): cos = -1 -> no message
    }
    assert by_pair.keys() == expected.keys()  # t1 has no training row: not linked
    for pair, value in expected.items():
        assert by_pair[pair] == pytest.approx(value, abs=1e-6), pair
    # the weights sit on both directions of their edges
    full = dense(graph, graph.weights(weights).detach())
    coord_node = layout.coord_start
    assert full[coord_node + 0, 0] == pytest.approx(r) and full[0, coord_node + 0] == pytest.approx(r)
    # the reference code's bug: item weights from the domain's *user* coordinators
    refcode = coords.pair_weights(graph, x, item_weight_source="user_coords_refcode")
    item_block = [b for b in graph.blocks if b.domain == "s" and b.kind == "item"][0]
    assert item_block.weight_coords("user_coords_refcode").tolist() == [0]
    start = sum(b.num_pairs for b in graph.blocks[: graph.blocks.index(item_block)])
    assert refcode[start : start + 2].tolist() == pytest.approx([1.0, r])  # s0 = (1,1), s1 = (0,1) vs (1,1)
    # new embeddings, new weights (recomputed, not cached); the node side is detached
    x2 = x.clone().requires_grad_(True)
    with torch.no_grad():
        x2[0] = torch.tensor([-3.0, 1.0])
    changed = coords.pair_weights(graph, x2)
    assert changed[0] == 0.0 and torch.equal(changed[1:], weights[1:].detach())
    changed.sum().backward()
    assert x2.grad is None and coords.embedding.weight.grad is not None


def test_unified_adjacency_keeps_the_bipartite_block_structure():
    layout, graph, members = tiny(k=2)
    full = dense(graph)
    assert torch.equal(full, full.T) and full.diagonal().abs().sum() == 0  # symmetric, no self-loops
    G, K = 2, 2
    users, items = set(range(3)), set(range(layout.user_rows, layout.user_rows + layout.total_items))
    user_coords = set(layout.coord_start + c for c in range(G * K))
    item_coords = set(layout.coord_start + G * K + c for c in range(G * K))
    for u in users:
        assert neighbours(graph, u) <= items | user_coords
    for i in items:
        assert neighbours(graph, i) <= users | item_coords
    for c in user_coords:  # no user-coordinator - user-coordinator edge, J complete
        assert neighbours(graph, c) & item_coords == item_coords
        assert not neighbours(graph, c) & (user_coords | items)
    for c in item_coords:
        assert neighbours(graph, c) & user_coords == user_coords
        assert not neighbours(graph, c) & (item_coords | users)
    # each domain's coordinators link exactly to that domain's members
    for index, domain in enumerate(["s", "t"]):
        u_k, i_k = (set(t.tolist()) for t in members[domain])
        for j in range(K):
            assert neighbours(graph, layout.coord_start + index * K + j) - item_coords == u_k
            assert neighbours(graph, layout.coord_start + G * K + index * K + j) - user_coords == i_k
    # R is binary: the repeated rows (1, s1) and (2, t0) give one entry each
    s1, t0 = int(layout.item_nodes("s", torch.tensor([1]))), int(layout.item_nodes("t", torch.tensor([0])))
    assert full[1, s1] == 1.0 and full[2, t0] == 1.0
    assert int(((graph.pattern.row < layout.coord_start) & (graph.pattern.col < layout.coord_start)).sum()) == 2 * 5


def test_homo_go_coordinators_see_one_domain_and_each_other():
    layout, graph, members = tiny("homogeneous", k=1)
    everyone = set(range(layout.coord_start, layout.num_nodes))
    for index, domain in enumerate(["s", "t"]):
        u_k, i_k = (set(t.tolist()) for t in members[domain])
        for j in range(2):  # 2K coordinators per domain
            coord = layout.coord_start + 2 * index + j
            assert neighbours(graph, coord) - everyone == u_k | i_k  # users and items of one domain
            assert neighbours(graph, coord) & everyone == everyone - {coord}  # complete, no loop
    assert torch.equal(graph.weights(), torch.ones(graph.pattern.nnz))
    _, alone, _ = tiny("homogeneous", k=1, homo_links="none")
    assert not any(neighbours(alone, c) & everyone for c in everyone)


def test_wo_go_graph_has_no_coordinator_node():
    layout, graph, _ = tiny("none")
    assert layout.num_coords == 0 and layout.num_nodes == layout.user_rows + layout.item_rows
    assert graph.blocks == [] and graph.num_pairs == 0
    assert int(graph.pattern.row.max()) < layout.coord_start


def test_weight_table_summarises_each_domain_and_type():
    layout, graph, _ = tiny(k=1)
    weights = torch.tensor([0.0, 0.5, 1.0, 0.05, 0.0, 0.95, 0.25])  # s-user x2, s-item x2, t-user x2, t-item x1
    table = coordinator_weight_table(graph, weights)
    s_user = table[(table.domain == "s") & (table.kind == "user")]
    assert s_user["count"].sum() == 2 and s_user["mean"].iloc[0] == pytest.approx(0.25)
    assert s_user["zero_share"].iloc[0] == pytest.approx(0.5)
    s_item = table[(table.domain == "s") & (table.kind == "item")]
    assert s_item.loc[s_item.bin == 9, "count"].item() == 1  # weight 1 lands in the last bin
    assert set(zip(table.domain, table.kind)) == {("s", "user"), ("s", "item"), ("t", "user"), ("t", "item")}


def _dense_propagation(adj: torch.Tensor, x: torch.Tensor, layers: int) -> list[torch.Tensor]:
    deg = adj.sum(1)
    inv = torch.where(deg > 0, deg.clamp(min=1e-30).pow(-0.5), torch.zeros_like(deg))
    norm = inv[:, None] * adj * inv[None, :]
    out = [x]
    for _ in range(layers):
        out.append(norm @ out[-1])
    return out


def test_weighted_lightgcn_equals_dense_normalised_propagation_with_an_isolated_node():
    torch.manual_seed(0)
    src = torch.tensor([0, 1, 0, 2, 1, 3, 2, 4, 3, 4])
    dst = torch.tensor([1, 0, 2, 0, 3, 1, 4, 2, 4, 3])  # node 5 has no edge
    pattern, position = CSRPattern.from_edges(src, dst, 6)
    w = torch.rand(10)
    weight = torch.zeros(pattern.nnz).scatter(0, position, w)
    adj = torch.zeros(6, 6)
    adj[dst, src] = w
    x = torch.randn(6, 4)
    reference = _dense_propagation(adj, x, 2)
    last = LightGCN(2, "last")(x, WeightedGraph(pattern, weight))
    torch.testing.assert_close(last, reference[2])
    torch.testing.assert_close(LightGCN(2, "mean")(x, WeightedGraph(pattern, weight)), torch.stack(reference).mean(0))
    assert torch.equal(last[5], torch.zeros(4))
    # a weight-0 entry is a removed edge
    dropped = weight.clone()
    dropped[position[:2]] = 0.0
    kept = torch.arange(2, 10)
    pattern2, position2 = CSRPattern.from_edges(src[kept], dst[kept], 6)
    weight2 = torch.zeros(pattern2.nnz).scatter(0, position2, w[kept])
    torch.testing.assert_close(LightGCN(2)(x, WeightedGraph(pattern, dropped)), LightGCN(2)(x, WeightedGraph(pattern2, weight2)))


def test_gcn_equals_pyg_gcnconv_with_edge_weights():
    torch.manual_seed(1)
    src = torch.tensor([0, 1, 1, 2, 2, 3])
    dst = torch.tensor([1, 0, 2, 1, 3, 2])
    pattern, position = CSRPattern.from_edges(src, dst, 5)
    w = torch.rand(6)
    weight = torch.zeros(pattern.nnz).scatter(0, position, w)
    gcn = GCN(3, num_layers=2)
    with torch.no_grad():
        for conv in gcn.convs:
            conv.bias.normal_()
    x = torch.randn(5, 3)
    ours = gcn(x, WeightedGraph(pattern, weight))
    edge_index = torch.stack([src, dst])
    conv1, conv2 = gcn.convs
    reference = conv2(torch.relu(conv1(x, edge_index, w)), edge_index, w)
    torch.testing.assert_close(ours, reference)
    assert isinstance(conv1, GCNConv)


def test_unified_propagation_equals_pyg_lgconv_on_the_edge_list_with_adaptive_weights():
    """The reference code's path: the same weighted edges through two PyG LGConv(normalize=True)."""
    from torch_geometric.nn import LGConv

    torch.manual_seed(3)
    layout, graph, _ = tiny(k=2)
    coords = HeterogeneousGraphCoordinators(layout.num_coords, 4)
    x = torch.randn(layout.num_nodes, 4)
    weight = graph.weights(coords.pair_weights(graph, x[: layout.coord_start])).detach()
    ours = LightGCN(2)(x, WeightedGraph(graph.pattern, weight))
    edge_index = torch.stack([graph.pattern.col, graph.pattern.row])
    conv = LGConv(normalize=True)
    torch.testing.assert_close(ours, conv(conv(x, edge_index, weight), edge_index, weight))

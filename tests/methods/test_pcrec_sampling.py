"""PCRec's r-ego random walks with restart (spec pcrec.md §3.2, §10.1)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from scipy import stats

from cdrbench.methods.pcrec.sampling import CSRGraph, RWRSampler, hop_balls, reference_walk


def bipartite(num_users: int, num_items: int, edges: list[tuple[int, int]], extra_isolated: int = 0) -> CSRGraph:
    """Users 0..U-1, items U..U+I-1 (+ isolated nodes at the end); both directions stored."""
    u = torch.tensor([a for a, _ in edges])
    i = torch.tensor([b for _, b in edges]) + num_users
    edge_index = torch.stack([torch.cat([u, i]), torch.cat([i, u])])
    return CSRGraph.from_edge_index(edge_index, num_users + num_items + extra_isolated)


def random_bipartite(num_users=30, num_items=40, per_user=3, seed=0, extra_isolated=0) -> CSRGraph:
    rng = np.random.default_rng(seed)
    edges = sorted({(u, int(i)) for u in range(num_users) for i in rng.choice(num_items, per_user, replace=False)})
    return bipartite(num_users, num_items, edges, extra_isolated)


def distances(graph: CSRGraph, source: int) -> dict[int, int]:
    dist, frontier = {source: 0}, [source]
    rowptr, col = graph.rowptr.tolist(), graph.col.tolist()
    while frontier:
        nxt = []
        for x in frontier:
            for y in col[rowptr[x] : rowptr[x + 1]]:
                if y not in dist:
                    dist[y] = dist[x] + 1
                    nxt.append(y)
        frontier = nxt
    return dist


def gen(seed=0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_seed_is_node_zero_and_the_visits_reach_the_budget_exactly():
    graph = random_bipartite(per_user=6)
    sampler = RWRSampler(graph, restart_prob=0.8, r=2, min_budget=16, max_nodes=None)
    seeds = torch.arange(graph.num_nodes)[graph.degree > 0]
    views = sampler.sample(seeds, 2, gen())
    deg = graph.degree[seeds].double()
    expected = torch.clamp(torch.floor(deg * math.e / (math.e - 1) / 0.8 + 0.5).long(), min=16)
    assert (expected > 16).any() and (expected == 16).any()  # both branches of max(min_budget, ...)
    for view in views:
        assert torch.equal(view.nodes[view.ptr[:-1]], seeds)  # the seed is local node 0
        assert torch.equal(view.num_visits, expected)
    deg075 = RWRSampler(graph, r=2, min_budget=1, budget="deg075").budgets(seeds)
    assert torch.equal(deg075, torch.clamp(torch.floor(deg.pow(0.75) * math.e / (math.e - 1) / 0.8 + 0.5).long(), min=1))


def test_a_node_without_edges_gives_the_one_node_view():
    graph = random_bipartite(extra_isolated=1)
    lonely = graph.num_nodes - 1
    sampler = RWRSampler(graph)
    seeds = torch.tensor([0, lonely, 5])
    view = sampler.sample(seeds, 2, gen())[1]
    assert view.sizes.tolist()[1] == 1 and int(view.nodes[view.ptr[1]]) == lonely
    assert int(view.num_visits[1]) == 0 and int(sampler.budgets(seeds)[1]) == 0
    in_lonely = (view.batch[view.edge_index[0]] == 1).sum()
    assert int(in_lonely) == 0


@pytest.mark.parametrize("r", [1, 2, 3])
def test_walks_never_leave_the_r_ego_network(r):
    graph = random_bipartite(num_users=40, num_items=60, per_user=2, seed=r)
    sampler = RWRSampler(graph, r=r, min_budget=256, max_nodes=None)
    seeds = torch.arange(graph.num_nodes)[graph.degree > 0][:30]
    visits = sampler.walk(seeds, 2, gen(r))
    farthest = 0
    for slot, node in zip(visits.slot.tolist(), visits.node.tolist()):
        d = distances(graph, int(visits.seeds[slot]))[node]
        assert d <= r
        farthest = max(farthest, d)
    assert farthest == r  # the ball's boundary is reached, so the restriction is what binds


def test_the_unrestricted_walk_goes_beyond_two_hops():
    graph = random_bipartite(num_users=40, num_items=60, per_user=2, seed=2)
    visits = RWRSampler(graph, r=None, max_nodes=None).walk(torch.tensor([0, 1, 2]), 1, gen())
    far = [distances(graph, int(visits.seeds[s]))[n] for s, n in zip(visits.slot.tolist(), visits.node.tolist())]
    assert max(far) >= 3


def test_a_walker_at_the_boundary_moves_uniformly_among_its_neighbours_inside():
    # seed user 0 with items a, b; user x shares a and b and has 40 items of its own
    a, b = 0, 1
    edges = [(0, a), (0, b), (1, a), (1, b)] + [(1, 2 + j) for j in range(40)]
    graph = bipartite(2, 42, edges)
    x = 1
    sampler = RWRSampler(graph, r=2)
    ball = hop_balls(graph, torch.tensor([0]), 1)
    n = 20_000
    nxt = sampler._step(torch.full((n,), x), torch.zeros(n, dtype=torch.long), ball, gen())
    assert set(nxt.tolist()) == {2 + a, 2 + b}  # item nodes follow the 2 users
    assert stats.binomtest(int((nxt == 2 + a).sum()), n, 0.5).pvalue > 1e-3
    free = sampler._step(torch.full((n,), x), torch.zeros(n, dtype=torch.long), None, gen())
    assert (free >= 4).float().mean() > 0.9  # without the ball it mostly leaves


def test_same_generator_same_subgraphs():
    graph = random_bipartite()
    sampler = RWRSampler(graph, min_budget=64)
    seeds = torch.tensor([0, 3, 7, 35])
    one, two = sampler.sample(seeds, 2, gen(5)), sampler.sample(seeds, 2, gen(5))
    other = sampler.sample(seeds, 2, gen(6))
    for x, y in zip(one, two):
        assert torch.equal(x.nodes, y.nodes) and torch.equal(x.edge_index, y.edge_index)
    assert not all(torch.equal(x.nodes, y.nodes) for x, y in zip(one, other))


def test_the_cap_keeps_the_seed_and_the_most_visited_nodes():
    graph = random_bipartite(num_users=60, num_items=80, per_user=5, seed=3)
    cap = 6
    sampler = RWRSampler(graph, r=None, min_budget=200, max_nodes=cap)
    seeds = torch.tensor([0, 1, 2, 61])
    visits = sampler.walk(seeds, 1, gen(1))
    nodes, ptr = sampler.select_nodes(visits)
    for slot in range(seeds.numel()):
        seed = int(seeds[slot])
        mine = visits.slot == slot
        count, first = Counter(), {}
        for node, order in zip(visits.node[mine].tolist(), visits.order[mine].tolist()):
            count[node] += 1
            first.setdefault(node, order)
        assert sorted(visits.order[mine].tolist()) == list(range(int(mine.sum())))  # one order per visit
        ranked = sorted((v for v in count if v != seed), key=lambda v: (-count[v], first[v]))
        kept = nodes[ptr[slot] : ptr[slot + 1]].tolist()
        assert kept[0] == seed and len(kept) == cap
        assert kept[1:] == sorted(ranked[: cap - 1])


def test_induced_edges_are_every_graph_edge_among_the_view_nodes():
    graph = random_bipartite(per_user=5)
    views = RWRSampler(graph, min_budget=32).sample(torch.tensor([0, 4, 33]), 1, gen())[0]
    rowptr, col = graph.rowptr.tolist(), graph.col.tolist()
    for g in range(views.num_graphs):
        members = views.nodes[views.ptr[g] : views.ptr[g + 1]].tolist()
        want = {(a, b) for a in members for b in col[rowptr[a] : rowptr[a + 1]] if b in set(members)}
        mask = views.batch[views.edge_index[0]] == g
        got = {(int(views.nodes[s]), int(views.nodes[d])) for s, d in views.edge_index[:, mask].T.tolist()}
        assert got == want


@pytest.mark.parametrize("r", [2, None])
def test_the_vectorised_walk_has_the_distribution_of_the_per_walker_loop(r):
    graph = random_bipartite(num_users=12, num_items=15, per_user=3, seed=4)
    seed, budget, repeats = 0, 40, 300
    sampler = RWRSampler(graph, r=r, min_budget=budget, max_nodes=None)
    ours = sampler.walk(torch.full((repeats,), seed), 1, gen(9)).node.tolist()
    rng = np.random.default_rng(9)
    theirs = [v for _ in range(repeats) for v in reference_walk(graph, seed, 0.8, r, budget, rng)]
    assert len(ours) == len(theirs) == repeats * budget
    support = sorted(set(ours) | set(theirs))
    table = np.array([[Counter(ours)[v] for v in support], [Counter(theirs)[v] for v in support]])
    assert stats.chi2_contingency(table).pvalue > 1e-3

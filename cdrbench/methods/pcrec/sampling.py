r"""r-ego subgraph sampling by random walks with restart (spec ``pcrec.md`` §3.2).

PCRec's positive pair for a node :math:`u` is two subgraphs drawn by random walks "on node u's
r-ego network" :math:`G_u`, the subgraph induced by :math:`S_u = \{i : d(u, i) \le r\}` (paper
Definition 1). The walk is GCC's random walk with restart (``gcc/datasets/graph_dataset.py``):
a trace starts at :math:`u`, every step moves to a uniformly chosen neighbour and counts as one
visit (repeats included), after every step the trace ends with probability ``restart_prob`` and
a new one starts at :math:`u`; traces are drawn until the visits reach the budget

.. math::
    B(u) = \max\big(\text{min\_budget},\ \lfloor \deg(u)^{a} \cdot \tfrac{e}{e-1} / p + 0.5 \rfloor\big)

(``budget=deg_linear``: :math:`a = 1`, GCC's single-graph loader; ``deg075``: :math:`a = 0.75`,
its multi-graph loader). The view's node set is :math:`\{u\} \cup` the visited nodes, :math:`u`
first (local id 0), and its edges are every edge of the graph among those nodes.

**Staying inside the r-ego network** (``r``; ``None`` = GCC's unrestricted walk). Let
:math:`B_{r-1}(u)` be the nodes within :math:`r - 1` hops. A walker inside it may move to any
neighbour (which is at most :math:`r` hops away); a walker outside it is exactly :math:`r` hops
away and may move only to its neighbours inside :math:`B_{r-1}(u)`, uniformly among them. A
walker without an allowed neighbour ends its trace. So no visit is ever farther than :math:`r`.

**Size cap** (``max_nodes``, a cdrbench deviation bounding the eigendecomposition of hub
nodes): a larger node set keeps :math:`u` and the ``max_nodes - 1`` most visited other nodes,
ties broken by the earlier first visit.

**Vectorised.** All walkers of a batch (both views of every seed, each trace one walker) move
at once: one step is ``col[rowptr[x] + floor(rand * deg[x])]`` over the CSR rows, the
restriction a membership test of sorted ``seed * N + node`` keys (rejection sampling, then an
exact enumeration of the neighbour rows for walkers still rejected). Traces are i.i.d., so the
walk draws a round of traces per seed in parallel, orders their visits by (trace, step) and
keeps the first ``B(u)`` -- the same distribution as GCC's one-trace-at-a-time loop. Plain
torch: no ``torch-cluster`` / ``pyg-lib`` (no wheels here).

Randomness comes only from the ``torch.Generator`` passed in; :func:`batch_generator` derives
one per (run seed, stream, epoch, batch), so a batch's subgraphs do not depend on which
DataLoader worker draws them, nor on how many workers there are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor

BUDGETS = ("deg_linear", "deg075")
#: rejection rounds for a restricted walker before its neighbour row is enumerated
_REJECTION_ROUNDS = 3


# ---------------------------------------------------------------------------- graph
@dataclass
class CSRGraph:
    """Undirected graph as CSR rows (every edge stored in both directions; parallel edges kept,
    so a repeated interaction weighs twice, as in GCC's DGL multigraph)."""

    rowptr: Tensor  # [N + 1] int64
    col: Tensor  # [E] int64, ascending within each row
    _forward: Optional["CSRGraph"] = None

    @classmethod
    def from_edge_index(cls, edge_index: Tensor, num_nodes: int) -> "CSRGraph":
        src, dst = edge_index[0].long(), edge_index[1].long()
        order = torch.argsort(src * num_nodes + dst)
        counts = torch.bincount(src, minlength=num_nodes)
        rowptr = torch.zeros(num_nodes + 1, dtype=torch.long)
        rowptr[1:] = torch.cumsum(counts, 0)
        return cls(rowptr=rowptr, col=dst[order].contiguous())

    @property
    def num_nodes(self) -> int:
        return self.rowptr.numel() - 1

    @property
    def num_edges(self) -> int:
        return self.col.numel()

    @property
    def degree(self) -> Tensor:
        return self.rowptr[1:] - self.rowptr[:-1]

    def neighbors(self, nodes: Tensor) -> tuple[Tensor, Tensor]:
        """``(owner, neighbour)`` for every CSR entry of ``nodes`` (owner indexes ``nodes``)."""
        return _row_entries(self.rowptr, self.col, nodes)

    def forward(self) -> "CSRGraph":
        """Every undirected edge once, in the row of its endpoint of lower (degree, id) rank.
        A node's forward row is short when the node is a hub (most of its neighbours have a
        lower degree), so enumerating it finds the edges among a node set at a fraction of the
        cost of the full rows (the degree ordering of triangle counting). Built on first use."""
        if self._forward is None:
            deg = self.degree
            rank = torch.empty_like(deg)
            rank[torch.argsort(deg * self.num_nodes + torch.arange(self.num_nodes))] = torch.arange(self.num_nodes)
            src = torch.repeat_interleave(torch.arange(self.num_nodes), deg)
            keep = rank[src] < rank[self.col]
            counts = torch.bincount(src[keep], minlength=self.num_nodes)
            rowptr = torch.zeros(self.num_nodes + 1, dtype=torch.long)
            rowptr[1:] = torch.cumsum(counts, 0)
            self._forward = CSRGraph(rowptr=rowptr, col=self.col[keep].contiguous())
        return self._forward


def _row_entries(rowptr: Tensor, col: Tensor, nodes: Tensor) -> tuple[Tensor, Tensor]:
    start = rowptr[nodes]
    deg = rowptr[nodes + 1] - start
    owner = torch.repeat_interleave(torch.arange(nodes.numel()), deg)
    first = torch.cumsum(deg, 0) - deg
    index = torch.arange(owner.numel()) + torch.repeat_interleave(start - first, deg)
    return owner, col[index]


class KeySet:
    """A sorted set of int64 keys with vectorised membership (``torch.searchsorted``)."""

    def __init__(self, keys: Tensor):
        self.keys = torch.unique(keys)

    def __contains__(self, item) -> bool:  # pragma: no cover - convenience
        return bool(self.contains(torch.as_tensor([item])).item())

    def contains(self, queries: Tensor) -> Tensor:
        if self.keys.numel() == 0:
            return torch.zeros(queries.shape, dtype=torch.bool)
        pos = torch.searchsorted(self.keys, queries).clamp(max=self.keys.numel() - 1)
        return self.keys[pos] == queries


def hop_balls(graph: CSRGraph, seeds: Tensor, radius: int) -> KeySet:
    """Keys ``s * N + v`` of every node ``v`` within ``radius`` hops of ``seeds[s]`` (BFS)."""
    n = graph.num_nodes
    owners = torch.arange(seeds.numel())
    keys = owners * n + seeds
    frontier_nodes, frontier_owners = seeds, owners
    for _ in range(radius):
        if frontier_nodes.numel() == 0:
            break
        owner, nbr = graph.neighbors(frontier_nodes)
        candidate = torch.unique(frontier_owners[owner] * n + nbr)
        new = candidate[~KeySet(keys).contains(candidate)] if keys.numel() else candidate
        keys = torch.cat([keys, new])
        frontier_owners, frontier_nodes = new // n, new % n
    return KeySet(keys)


# ---------------------------------------------------------------------------- walks
@dataclass
class Visits:
    """Every visit of a batch of walks: ``slot`` (which view), ``node``, ``order`` (0, 1, ...
    within the slot: trace by trace, step by step); ``seeds[slot]`` is the slot's seed."""

    seeds: Tensor
    slot: Tensor
    node: Tensor
    order: Tensor

    def counts(self) -> Tensor:
        """Total visits per slot."""
        return torch.bincount(self.slot, minlength=self.seeds.numel())


@dataclass
class Subgraphs:
    """A batch of induced subgraphs: graph ``g`` holds ``nodes[ptr[g]:ptr[g+1]]`` (global ids,
    the seed first); ``edge_index`` indexes ``nodes`` (both directions of every edge)."""

    nodes: Tensor
    ptr: Tensor
    edge_index: Tensor
    num_visits: Tensor

    @property
    def num_graphs(self) -> int:
        return self.ptr.numel() - 1

    @property
    def sizes(self) -> Tensor:
        return self.ptr[1:] - self.ptr[:-1]

    @property
    def batch(self) -> Tensor:
        return torch.repeat_interleave(torch.arange(self.num_graphs), self.sizes)


class RWRSampler:
    """Random walks with restart inside r-ego networks (see the module docstring).

    Args:
        graph: the graph to walk on.
        restart_prob: probability that a trace ends after a step, in (0, 1).
        r: radius of the ego network the walks stay in (``None`` = unrestricted).
        min_budget: least visits per view (GCC's ``--rw-hops``, 256).
        budget: ``deg_linear`` | ``deg075`` (the exponent of the degree in :math:`B(u)`).
        max_nodes: node cap per view (``None`` = no cap); must be >= 2.
    """

    def __init__(self, graph: CSRGraph, restart_prob: float = 0.8, r: Optional[int] = 2, min_budget: int = 256,
                 budget: str = "deg_linear", max_nodes: Optional[int] = 256):
        if not 0.0 < restart_prob < 1.0:
            raise ValueError(f"restart_prob must be in (0, 1), got {restart_prob}")
        if r is not None and r < 1:
            raise ValueError(f"r must be >= 1 or None, got {r}")
        if budget not in BUDGETS:
            raise ValueError(f"budget must be one of {BUDGETS}, got {budget!r}")
        if max_nodes is not None and max_nodes < 2:
            raise ValueError(f"max_nodes must be >= 2 or None, got {max_nodes}")
        if min_budget < 1:
            raise ValueError(f"min_budget must be >= 1, got {min_budget}")
        self.graph = graph
        self.restart_prob = float(restart_prob)
        self.r = r
        self.min_budget = int(min_budget)
        self.budget = budget
        self.max_nodes = max_nodes
        self.degree = graph.degree
        graph.forward()  # built here, so DataLoader workers inherit it

    def budgets(self, seeds: Tensor) -> Tensor:
        """:math:`B(u)` per seed; 0 for a seed without edges (its view is ``{u}``, no walk)."""
        deg = self.degree[seeds].double()
        power = deg if self.budget == "deg_linear" else deg.pow(0.75)
        scaled = torch.floor(power * math.e / (math.e - 1) / self.restart_prob + 0.5).long()
        out = torch.clamp(scaled, min=self.min_budget)
        return torch.where(self.degree[seeds] > 0, out, torch.zeros_like(out))

    # ------------------------------------------------------------------ one step
    def _uniform_neighbor(self, x: Tensor, generator: torch.Generator) -> Tensor:
        deg = self.degree[x]
        pick = (torch.rand(x.numel(), generator=generator) * deg).long()
        return self.graph.col[self.graph.rowptr[x] + torch.minimum(pick, deg - 1)]

    def _step(self, x: Tensor, owner: Tensor, ball: Optional[KeySet], generator: torch.Generator) -> Tensor:
        """Next node of every walker at ``x`` (``owner`` = index of its seed), -1 = dead end."""
        y = self._uniform_neighbor(x, generator)
        if ball is None:
            return y
        n = self.graph.num_nodes
        outside = (~ball.contains(owner * n + x)).nonzero().flatten()
        if outside.numel() == 0:
            return y
        xo, oo = x[outside], owner[outside]
        yo = y[outside]
        ok = ball.contains(oo * n + yo)
        for _ in range(_REJECTION_ROUNDS):
            bad = (~ok).nonzero().flatten()
            if bad.numel() == 0:
                break
            yo[bad] = self._uniform_neighbor(xo[bad], generator)
            ok[bad] = ball.contains(oo[bad] * n + yo[bad])
        bad = (~ok).nonzero().flatten()
        if bad.numel():  # exact: uniform among the allowed entries of the neighbour row
            row_owner, nbr = self.graph.neighbors(xo[bad])
            allowed = ball.contains(oo[bad][row_owner] * n + nbr)
            count = torch.bincount(row_owner[allowed], minlength=bad.numel())
            first = torch.cumsum(count, 0) - count
            pick = (torch.rand(bad.numel(), generator=generator, dtype=torch.float64) * count).long()
            pick = torch.minimum(pick, (count - 1).clamp(min=0))
            candidates = nbr[allowed]
            chosen = torch.full((bad.numel(),), -1, dtype=torch.long)
            has = count > 0
            chosen[has] = candidates[(first + pick)[has]]
            yo[bad] = chosen
        y[outside] = yo
        return y

    # ------------------------------------------------------------------ walks
    def walk(self, seeds: Tensor, num_views: int, generator: torch.Generator) -> Visits:
        """Visits of ``num_views`` independent trace sets per seed; slot ``v * B + b`` is view
        ``v`` of ``seeds[b]``."""
        seeds = seeds.long()
        b = seeds.numel()
        slot_seed = seeds.repeat(num_views)
        owner_of_slot = torch.arange(b).repeat(num_views)
        need = self.budgets(slot_seed)
        ball = hop_balls(self.graph, seeds, self.r - 1) if self.r is not None else None
        done = torch.zeros_like(need)
        parts: list[tuple[Tensor, Tensor, Tensor]] = []
        while True:
            remaining = need - done
            active = (remaining > 0).nonzero().flatten()
            if active.numel() == 0:
                break
            # enough traces that one round almost always covers the budget (mean length 1 / p)
            traces = torch.ceil(remaining[active].double() * self.restart_prob * 1.2).long() + 2
            # walkers in (slot, trace) order; a walker's visits are consecutive, one per step
            slot_of_walker = torch.repeat_interleave(active, traces)
            w_id = torch.arange(slot_of_walker.numel())
            pos = slot_seed[slot_of_walker]
            rec_walker, rec_node, rec_step = [], [], []
            step = 0
            while w_id.numel():
                nxt = self._step(pos, owner_of_slot[slot_of_walker[w_id]], ball, generator)
                moved = nxt >= 0
                w_id, nxt = w_id[moved], nxt[moved]
                rec_walker.append(w_id)
                rec_node.append(nxt)
                rec_step.append(torch.full_like(w_id, step))
                keep = torch.rand(w_id.numel(), generator=generator) >= self.restart_prob
                w_id, pos = w_id[keep], nxt[keep]
                step += 1
            r_walker, r_node, r_step = torch.cat(rec_walker), torch.cat(rec_node), torch.cat(rec_step)
            # rank of a visit in its slot, trace by trace and step by step (no sort needed):
            # the visits of the walkers before it in the slot, plus its step
            length = torch.bincount(r_walker, minlength=slot_of_walker.numel())
            before = torch.cumsum(length, 0) - length
            slot_start = before[torch.cumsum(traces, 0) - traces]  # of each active slot's first walker
            slot_base = torch.zeros(need.numel(), dtype=torch.long)
            slot_base[active] = slot_start
            r_slot = slot_of_walker[r_walker]
            rank = before[r_walker] - slot_base[r_slot] + r_step
            kept = rank < remaining[r_slot]
            parts.append((r_slot[kept], r_node[kept], done[r_slot[kept]] + rank[kept]))
            done = done + torch.minimum(torch.bincount(r_slot, minlength=need.numel()), remaining.clamp(min=0))
        if parts:
            slot, node, order = (torch.cat(t) for t in zip(*parts))
        else:
            slot = node = order = torch.zeros(0, dtype=torch.long)
        return Visits(seeds=slot_seed, slot=slot, node=node, order=order)

    # ------------------------------------------------------------------ subgraphs
    def select_nodes(self, visits: Visits) -> tuple[Tensor, Tensor]:
        """``(nodes, ptr)``: per slot the seed, then the visited nodes in ascending id (at most
        ``max_nodes - 1`` of them: the most visited, ties by earlier first visit)."""
        n = self.graph.num_nodes
        num_slots = visits.seeds.numel()
        keys = visits.slot * n + visits.node
        uniq, inverse, count = torch.unique(keys, return_inverse=True, return_counts=True)
        first = torch.full((uniq.numel(),), torch.iinfo(torch.long).max, dtype=torch.long)
        first.scatter_reduce_(0, inverse, visits.order, reduce="amin")
        slot, node = uniq // n, uniq % n
        other = node != visits.seeds[slot]
        slot, node, count, first = slot[other], node[other], count[other], first[other]
        if self.max_nodes is not None:
            # rank within each slot by (visits desc, first visit asc): three stable sorts
            order = torch.argsort(first, stable=True)
            order = order[torch.argsort(-count[order], stable=True)]
            order = order[torch.argsort(slot[order], stable=True)]
            per_slot = torch.bincount(slot, minlength=num_slots)
            start = torch.cumsum(per_slot, 0) - per_slot
            rank = torch.empty_like(order)
            rank[order] = torch.arange(order.numel()) - start[slot[order]]
            keep = rank < self.max_nodes - 1
            slot, node = slot[keep], node[keep]
        # seed first (key 0), then the kept nodes by id
        all_slot = torch.cat([torch.arange(num_slots), slot])
        all_key = torch.cat([torch.zeros(num_slots, dtype=torch.long), node + 1])
        order = torch.argsort(all_slot * (n + 1) + all_key)
        nodes = torch.cat([visits.seeds, node])[order]
        sizes = torch.bincount(all_slot, minlength=num_slots)
        ptr = torch.zeros(num_slots + 1, dtype=torch.long)
        ptr[1:] = torch.cumsum(sizes, 0)
        return nodes, ptr

    def induced_edges(self, nodes: Tensor, ptr: Tensor) -> Tensor:
        """``edge_index`` (indices into ``nodes``, both directions) of every graph edge inside each
        node set (self-loops, which a user-item graph does not have, are left out)."""
        n = self.graph.num_nodes
        sizes = ptr[1:] - ptr[:-1]
        graph_of = torch.repeat_interleave(torch.arange(sizes.numel()), sizes)
        keys = graph_of * n + nodes
        sorted_keys, position = torch.sort(keys)
        owner, nbr = self.graph.forward().neighbors(nodes)
        query = graph_of[owner] * n + nbr
        at = torch.searchsorted(sorted_keys, query).clamp(max=max(sorted_keys.numel() - 1, 0))
        inside = sorted_keys[at] == query if sorted_keys.numel() else torch.zeros_like(query, dtype=torch.bool)
        a, b = owner[inside], position[at[inside]]
        return torch.stack([torch.cat([a, b]), torch.cat([b, a])])

    def sample(self, seeds: Tensor, num_views: int, generator: torch.Generator) -> list[Subgraphs]:
        """``num_views`` independent views of every seed: one :class:`Subgraphs` per view."""
        b = seeds.numel()
        visits = self.walk(seeds, num_views, generator)
        nodes, ptr = self.select_nodes(visits)
        counts = visits.counts()
        views = []
        for v in range(num_views):
            lo, hi = int(ptr[v * b]), int(ptr[(v + 1) * b])
            view_nodes, view_ptr = nodes[lo:hi], ptr[v * b : (v + 1) * b + 1] - lo
            views.append(Subgraphs(view_nodes, view_ptr, self.induced_edges(view_nodes, view_ptr),
                                   counts[v * b : (v + 1) * b]))
        return views


def reference_walk(graph: CSRGraph, seed: int, restart_prob: float, r: Optional[int], budget: int,
                   rng: np.random.Generator) -> list[int]:
    """GCC's walk written as the per-walker Python loop (one trace at a time): the visits of
    one view, in order. Slow; the reference of the tests and of ``scripts/bench_pcrec.py``."""
    rowptr, col = graph.rowptr.tolist(), graph.col.tolist()
    row = lambda x: col[rowptr[x] : rowptr[x + 1]]  # noqa: E731
    inner = None
    if r is not None:
        inner, frontier = {seed}, {seed}
        for _ in range(r - 1):
            frontier = {y for x in frontier for y in row(x)} - inner
            inner |= frontier
    visits: list[int] = []
    if rowptr[seed + 1] == rowptr[seed]:
        return visits
    while len(visits) < budget:
        x = seed
        while True:
            allowed = row(x) if inner is None or x in inner else [y for y in row(x) if y in inner]
            if not allowed:
                break
            x = allowed[int(rng.integers(len(allowed)))]
            visits.append(x)
            if len(visits) >= budget or rng.random() < restart_prob:
                break
    return visits


# ---------------------------------------------------------------------------- seeding
STREAMS = {"pretrain": 0, "init_target": 1, "init_source": 2, "pretrain_order": 3}


def batch_generator(run_seed: int, stream: str, epoch: int, batch: int) -> torch.Generator:
    """The generator of one batch: a hash of (run seed, stream, epoch, batch index), so a
    batch draws the same subgraphs whichever worker draws it and after a resume."""
    state = np.random.SeedSequence([int(run_seed) % 2**32, STREAMS[stream], int(epoch), int(batch)])
    return torch.Generator().manual_seed(int(state.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)))

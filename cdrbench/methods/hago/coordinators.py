r"""Heterogeneous graph coordinators and the unified multi-domain graph (HAGO §3.2, spec §3).

The node layout of the unified graph (spec §2.4)::

    users [0, U) | pad user | items: target block, then each source block | pad item | coordinators

Every domain :math:`k` has :math:`K` user and :math:`K` item coordinators, learnable embeddings
:math:`E_C \in \mathbb{R}^{2GK \times d}` (user coordinators first, domains in ``data.domains``
order: sources, then the target). The symmetric adjacency of Eq. 4 is

.. math::
    A = \begin{pmatrix} 0 & R & W_U & 0 \\ R^\top & 0 & 0 & W_I \\
                        W_U^\top & 0 & 0 & J \\ 0 & W_I^\top & J^\top & 0 \end{pmatrix},

with :math:`R` the binary interactions (all source rows and the target *training* rows; a repeated
pair counts once), :math:`W_U[u, (k, j)] = w_{c_{kj}, u}` for the users :math:`u \in U_k` of domain
:math:`k` (no edge otherwise), :math:`W_I` likewise for the items :math:`I_k`, and :math:`J` all
ones: every user coordinator meets every item coordinator, across domains; coordinators of the
same type never meet. Eq. 3 gives the adaptive weights

.. math::
    w_{c,v} = \max\bigl(0, \cos(e_c, \operatorname{sg}(e_v))\bigr),

recomputed at every step from the current tables (``sg`` = stop-gradient on the node side, the
reference code; ``coord.detach_node``). An edge of weight 0 carries no message but stays in the
pattern, so the edge removal of §4 can still draw it.

**Built once, updated by values.** :class:`UnifiedGraph` sorts every edge (interactions, the
coordinator-node pairs of both directions, the coordinator links) into one
:class:`~cdrbench.models.sparse.CSRPattern` at construction; a step only scatters the new pair
weights into a weight vector (:meth:`UnifiedGraph.weights`), and propagation runs through the
CSR SpMM of :mod:`cdrbench.models.sparse`. No dense ``N x N`` matrix is ever formed.

Variant wirings (spec §7): ``heterogeneous`` (HAGO, HeterGO), ``homogeneous`` (HomoGO: ``2K``
coordinators per domain, each linked to every user *and* item of its domain, coordinators linked
to each other by ``homo_go.coord_links``), ``none`` (w/o GO: the interactions alone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from cdrbench.models.sparse import CSRPattern

WIRINGS = ("heterogeneous", "homogeneous", "none")
HOMO_LINKS = ("complete", "none")


@dataclass
class NodeLayout:
    """Node ids of the unified graph (see the module docstring).

    Args:
        num_users: users of the data set (the shared id space ``[0, U)``).
        domains: domain keys in coordinator order (``data.domains``: sources, then the target).
        item_domains: domain keys in item-block order (target first).
        num_items: items per domain.
        pad_node: one isolated padding user after the users and one padding item after the items
            (RecBole's id 0 in the reference code; spec §9 row 9). They are pre-training anchors
            and never candidates.
        num_coords: coordinator nodes in total (0 without coordinators).
    """

    num_users: int
    domains: list
    item_domains: list
    num_items: dict
    pad_node: bool = True
    num_coords: int = 0
    item_offsets: dict = field(init=False)

    def __post_init__(self) -> None:
        offsets, start = {}, 0
        for domain in self.item_domains:
            offsets[domain] = start
            start += self.num_items[domain]
        self.item_offsets = offsets
        self.total_items = start

    @property
    def user_rows(self) -> int:
        return self.num_users + int(self.pad_node)

    @property
    def item_rows(self) -> int:
        return self.total_items + int(self.pad_node)

    @property
    def coord_start(self) -> int:
        return self.user_rows + self.item_rows

    @property
    def num_nodes(self) -> int:
        return self.coord_start + self.num_coords

    def item_nodes(self, domain: str, items: Tensor) -> Tensor:
        return items.long() + self.user_rows + self.item_offsets[domain]

    def item_block(self, domain: str) -> Tensor:
        """Node ids of every item of ``domain``."""
        return self.item_nodes(domain, torch.arange(self.num_items[domain]))


@dataclass
class CoordinatorBlock:
    """The coordinator-node pairs of one domain and node type: every node of ``nodes`` linked to
    every coordinator of ``coords`` (pairs in node-major order, i.e. ``[n, K].flatten()``).

    ``weight_coords`` are the coordinators whose embeddings define the pair weights: ``coords``
    itself, except for item blocks under ``coord.item_weight_source=user_coords_refcode`` (the
    reference code's bug, spec §3 Eq. 3). ``entries`` holds each pair's entry index in the CSR
    pattern for the node->coordinator (row 0) and coordinator->node (row 1) direction."""

    domain: str
    kind: str  # user | item | node (HomoGO: users and items alike)
    nodes: Tensor
    coords: Tensor
    user_coords: Optional[Tensor]
    entries: Tensor

    def weight_coords(self, item_weight_source: str) -> Tensor:
        if self.kind == "item" and item_weight_source == "user_coords_refcode":
            return self.user_coords
        return self.coords

    @property
    def num_pairs(self) -> int:
        return self.nodes.numel() * self.coords.numel()

    def to(self, device) -> "CoordinatorBlock":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return CoordinatorBlock(self.domain, self.kind, move(self.nodes), move(self.coords), move(self.user_coords),
                                move(self.entries))


class UnifiedGraph:
    """The Eq. 4 adjacency as a fixed CSR pattern plus per-step weights (module docstring).

    Build it with :func:`build_unified_graph`. :meth:`weights` returns the weight of every entry
    (1 for interactions and coordinator links, the given pair weights for coordinator-node
    entries, 1 when none are given: HeterGO / HomoGO).
    """

    def __init__(self, layout: NodeLayout, pattern: CSRPattern, blocks: list[CoordinatorBlock], wiring: str):
        self.layout = layout
        self.pattern = pattern
        self.blocks = blocks
        self.wiring = wiring
        if blocks:
            self.pair_entries = torch.cat([torch.cat([b.entries[0], b.entries[1]]) for b in blocks])
            self._pair_split = [b.num_pairs for b in blocks]
        else:
            self.pair_entries = torch.zeros(0, dtype=torch.long)
            self._pair_split = []
        self._ones: Optional[Tensor] = None

    @property
    def num_pairs(self) -> int:
        return sum(self._pair_split)

    def ones(self) -> Tensor:
        if self._ones is None or self._ones.device != self.pattern.col.device:
            self._ones = torch.ones(self.pattern.nnz, device=self.pattern.col.device)
        return self._ones

    def weights(self, pair_weights: Optional[Tensor] = None) -> Tensor:
        """Entry weights; ``pair_weights`` (``[num_pairs]``, blocks in order) go to both directions."""
        if pair_weights is None:
            return self.ones()
        blockwise = pair_weights.split(self._pair_split)
        both = torch.cat([torch.cat([w, w]) for w in blockwise])
        return self.ones().scatter(0, self.pair_entries, both)

    def to(self, device) -> "UnifiedGraph":
        return UnifiedGraph(self.layout, self.pattern.to(device), [b.to(device) for b in self.blocks], self.wiring)

    # ------------------------------------------------------------------ inspection (tests, artifacts)
    def edges(self) -> tuple[Tensor, Tensor]:
        """``(src, dst)`` of every entry, in CSR order."""
        return self.pattern.col, self.pattern.row


def _unique_pairs(users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
    """Distinct (user, item) pairs (R is binary: a repeated interaction counts once)."""
    if users.numel() == 0:
        return users.long(), items.long()
    pairs = torch.unique(torch.stack([users.long(), items.long()]), dim=1)
    return pairs[0], pairs[1]


def build_unified_graph(
    layout: NodeLayout,
    interactions: dict[str, tuple[Tensor, Tensor]],
    members: dict[str, tuple[Tensor, Tensor]],
    wiring: str,
    num_coords: int = 0,
    homo_links: str = "complete",
) -> UnifiedGraph:
    """The unified graph of the given domains' interactions, coordinators per ``wiring``.

    Args:
        layout: node ids (its ``num_coords`` must equal what ``wiring`` needs: ``2GK`` for both
            coordinator wirings, 0 for ``none``).
        interactions: domain -> ``(user nodes, item nodes)`` of its training interactions.
        members: domain -> ``(U_k, I_k)`` as node ids: who links to that domain's coordinators.
        wiring: ``heterogeneous`` | ``homogeneous`` | ``none``.
        num_coords: ``K``, coordinators per type and domain.
        homo_links: HomoGO coordinator links: ``complete`` (every pair of distinct coordinators)
            | ``none``.
    """
    if wiring not in WIRINGS:
        raise ValueError(f"wiring={wiring!r} is not one of {WIRINGS}")
    domains = list(layout.domains)
    num_domains, k = len(domains), num_coords
    needed = 0 if wiring == "none" else 2 * num_domains * k
    if layout.num_coords != needed:
        raise ValueError(f"layout has {layout.num_coords} coordinator nodes, wiring {wiring} with K={k} needs {needed}")

    src_parts, dst_parts = [], []
    for domain, (users, items) in interactions.items():
        u, i = _unique_pairs(users, items)
        src_parts += [u, i]
        dst_parts += [i, u]
    num_interaction_entries = sum(t.numel() for t in src_parts)

    # coordinator-node pairs, per block, node-major
    specs: list[tuple[str, str, Tensor, Tensor, Optional[Tensor]]] = []
    links: list[tuple[Tensor, Tensor]] = []
    if wiring == "heterogeneous":
        for index, domain in enumerate(domains):
            user_coords = index * k + torch.arange(k)
            item_coords = num_domains * k + index * k + torch.arange(k)
            users, items = members[domain]
            specs.append((domain, "user", users, user_coords, None))
            specs.append((domain, "item", items, item_coords, user_coords))
        user_side = torch.arange(num_domains * k)
        item_side = num_domains * k + torch.arange(num_domains * k)
        a, b = torch.meshgrid(user_side, item_side, indexing="ij")
        links.append((a.flatten(), b.flatten()))  # J, both directions added below
    elif wiring == "homogeneous":
        for index, domain in enumerate(domains):
            coords = 2 * index * k + torch.arange(2 * k)
            users, items = members[domain]
            specs.append((domain, "node", torch.cat([users, items]), coords, None))
        if homo_links == "complete":
            everyone = torch.arange(2 * num_domains * k)
            a, b = torch.meshgrid(everyone, everyone, indexing="ij")
            upper = a < b
            links.append((a[upper], b[upper]))
        elif homo_links != "none":
            raise ValueError(f"homo_links={homo_links!r} is not one of {HOMO_LINKS}")

    pair_ranges = []
    cursor = num_interaction_entries
    for _, _, nodes, coords, _ in specs:
        node_rep = nodes.long().repeat_interleave(coords.numel())
        coord_rep = layout.coord_start + coords.repeat(nodes.numel())
        src_parts += [node_rep, coord_rep]
        dst_parts += [coord_rep, node_rep]
        n = node_rep.numel()
        pair_ranges.append((cursor, cursor + n))  # forward entries; backward follow at +n
        cursor += 2 * n
    for a, b in links:
        a, b = layout.coord_start + a, layout.coord_start + b
        src_parts += [a, b]
        dst_parts += [b, a]

    src = torch.cat(src_parts) if src_parts else torch.zeros(0, dtype=torch.long)
    dst = torch.cat(dst_parts) if dst_parts else torch.zeros(0, dtype=torch.long)
    pattern, position = CSRPattern.from_edges(src, dst, layout.num_nodes)
    blocks = []
    for (domain, kind, nodes, coords, user_coords), (start, stop) in zip(specs, pair_ranges):
        n = stop - start
        entries = torch.stack([position[start:stop], position[stop : stop + n]])
        blocks.append(CoordinatorBlock(domain, kind, nodes.long(), coords, user_coords, entries))
    return UnifiedGraph(layout, pattern, blocks, wiring)


class HeterogeneousGraphCoordinators(torch.nn.Module):
    r"""The coordinator embeddings :math:`E_C` (Xavier-normal, as the reference code) and the
    adaptive weights of Eq. 3.

    Args:
        num_coords: coordinator nodes in total (``2GK``).
        embedding_dim: ``d``.
    """

    def __init__(self, num_coords: int, embedding_dim: int):
        super().__init__()
        self.embedding = torch.nn.Embedding(num_coords, embedding_dim)
        torch.nn.init.xavier_normal_(self.embedding.weight)

    def pair_weights(self, graph: UnifiedGraph, node_features: Tensor, detach_node: bool = True,
                     item_weight_source: str = "item_coords") -> Tensor:
        r""":math:`\max(0, \cos(e_c, e_v))` for every coordinator-node pair of ``graph``, blocks in
        order; ``node_features`` are the rows of the (non-coordinator) nodes by node id."""
        coords = F.normalize(self.embedding.weight, dim=-1)
        parts = []
        for block in graph.blocks:
            nodes = node_features[block.nodes]
            if detach_node:
                nodes = nodes.detach()
            cos = F.normalize(nodes, dim=-1) @ coords[block.weight_coords(item_weight_source)].T
            parts.append(F.relu(cos).flatten())
        return torch.cat(parts) if parts else node_features.new_zeros(0)


HISTOGRAM_BINS = 10


def coordinator_weight_table(graph: UnifiedGraph, pair_weights: Tensor, bins: int = HISTOGRAM_BINS) -> pd.DataFrame:
    """The distribution of the coordinator-node weights per domain and node type: one row per
    histogram bin of ``[0, 1]`` (the last bin includes 1), with the group's edge count, mean
    weight and share of exact zeros (edges that carry no message) repeated on each row."""
    weights = pair_weights.detach().float().cpu().numpy()
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows, start = [], 0
    groups: dict[tuple[str, str], list[np.ndarray]] = {}
    for block in graph.blocks:
        groups.setdefault((block.domain, block.kind), []).append(weights[start : start + block.num_pairs])
        start += block.num_pairs
    for (domain, kind), parts in groups.items():
        values = np.concatenate(parts)
        counts, _ = np.histogram(np.clip(values, 0.0, 1.0), bins=edges)
        for b in range(bins):
            rows.append({
                "domain": domain, "kind": kind, "bin": b, "bin_low": edges[b], "bin_high": edges[b + 1],
                "count": int(counts[b]), "share": float(counts[b] / max(1, len(values))),
                "edges": int(len(values)), "mean": float(values.mean()) if len(values) else float("nan"),
                "zero_share": float((values == 0).mean()) if len(values) else float("nan"),
            })
    return pd.DataFrame(rows)

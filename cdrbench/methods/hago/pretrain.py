r"""Multi-domain pre-training over the unified graph (HAGO §3.2.4, §4.4; spec §4).

Per step (a batch of anchor nodes):

1. recompute the coordinator weights (Eq. 3) from the current tables;
2. draw two views: **edge removal** (each *directed* entry dropped with probability
   :math:`p_e`, coordinator edges included; kept edges keep their weights, so a view can be
   asymmetric; ``aug.edge_drop_symmetric`` drops both directions together) and **feature
   masking** (each embedding column zeroed with probability :math:`p_f`, the same columns for
   every node of the view) — PyGCL's ``EdgeRemoving`` and ``FeatureMasking``, as the reference
   code uses them;
3. encode the whole graph once per view and take the anchors' rows;
4. the self-supervised loss of ``pretrain.method``:

   * **GRACE** (paper default): :math:`h = W_2\,\mathrm{ELU}(W_1 z + b_1) + b_2`,
     :math:`\mathcal L = \tfrac12[\ell(h^1, h^2) + \ell(h^2, h^1)]` with the InfoNCE
     :math:`\ell` of :func:`cdrbench.models.losses.info_nce` (τ, inter- and intra-view negatives);
   * **COSTA**: the rows are first sketched, :math:`z' = P z` with
     :math:`P \in \mathbb R^{\lfloor rB\rfloor \times B}`, :math:`P_{ij} \sim \mathcal N(0, 1/k)`
     shared by both views, then GRACE's projection and InfoNCE *without* intra-view negatives;
   * **BGRL**: online :math:`q = \mathrm{pred}(\mathrm{proj}(\mathrm{BN}(z)))`, target
     :math:`t = \mathrm{proj}(\mathrm{BN}(z_{tgt}))` without gradient, where :math:`z_{tgt}` comes
     from an EMA copy of the encoder (decay 0.99, updated before each step as in the reference
     code); :math:`\mathcal L = 1 - \tfrac12[\overline{\cos}(t^1, q^2) + \overline{\cos}(t^2, q^1)]`.
     With the parameter-free LightGCN the EMA copy *is* the online encoder, so
     :math:`z_{tgt} = \operatorname{sg}(z)` exactly and is not recomputed.

Anchors (spec §4): every epoch visits all user nodes (shuffled), then all item nodes (shuffled),
in batches of ``pretrain.batch_size`` (``anchor_order=mixed``: one shuffled pool); coordinators
are never anchors; a batch of fewer than 2 anchors is skipped (its contrastive loss has no
negatives and BatchNorm cannot run on it).
"""

from __future__ import annotations

import copy
import math
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from cdrbench.methods.hago.coordinators import HeterogeneousGraphCoordinators, NodeLayout, UnifiedGraph
from cdrbench.methods.hago.encoders import WeightedGraph
from cdrbench.models.losses import info_nce

OBJECTIVES = ("grace", "bgrl", "costa")
ANCHOR_ORDERS = ("users_then_items", "mixed")


# ---------------------------------------------------------------------------- augmentations
class GraphAugmentation:
    """Edge removal + feature masking (module docstring), drawn from an explicit generator."""

    def __init__(self, edge_drop: float = 0.3, feature_mask: float = 0.1, edge_drop_symmetric: bool = False):
        self.edge_drop = edge_drop
        self.feature_mask = feature_mask
        self.edge_drop_symmetric = edge_drop_symmetric

    def drop_edges(self, graph: UnifiedGraph, weight: Tensor, generator: torch.Generator) -> Tensor:
        """``weight`` with the removed entries set to 0 (equivalent to removing them: a 0 weight
        adds nothing to a degree and carries no message)."""
        if self.edge_drop <= 0:
            return weight
        draw = torch.rand(weight.shape, generator=generator, device=weight.device)
        if self.edge_drop_symmetric:  # the pattern is symmetric: transpose_perm is each entry's reverse
            reverse = graph.pattern.transpose_perm
            entry = torch.arange(weight.numel(), device=weight.device)
            draw = torch.where(entry < reverse, draw, draw[reverse])
        return weight * (draw >= self.edge_drop)

    def mask_features(self, x: Tensor, generator: torch.Generator) -> Tensor:
        if self.feature_mask <= 0:
            return x
        keep = torch.rand(x.shape[1], generator=generator, device=x.device) >= self.feature_mask
        return x * keep


# ---------------------------------------------------------------------------- objectives
def _projection(dim: int) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(dim, dim), torch.nn.ELU(), torch.nn.Linear(dim, dim))


class GRACE(torch.nn.Module):
    """GRACE's projection head and symmetric InfoNCE with intra-view negatives."""

    needs_target = False

    def __init__(self, dim: int, tau: float = 0.1):
        super().__init__()
        self.project = _projection(dim)
        self.tau = tau

    def forward(self, z1: Tensor, z2: Tensor, generator: torch.Generator, targets=None) -> Tensor:
        h1, h2 = self.project(z1), self.project(z2)
        return 0.5 * (info_nce(h1, h2, self.tau, True) + info_nce(h2, h1, self.tau, True))


class COSTA(torch.nn.Module):
    """COSTA: a Gaussian sketch of the batch rows, then GRACE's head and InfoNCE without
    intra-view negatives."""

    needs_target = False

    def __init__(self, dim: int, tau: float = 0.1, ratio: float = 0.5):
        super().__init__()
        self.project = _projection(dim)
        self.tau = tau
        self.ratio = ratio

    def sketch(self, rows: int, generator: torch.Generator, device) -> Tensor:
        """``P [floor(ratio * rows), rows]`` with entries :math:`\\mathcal N(0, 1/k)`."""
        k = max(1, int(rows * self.ratio))
        return torch.randn(k, rows, generator=generator, device=device) / math.sqrt(k)

    def forward(self, z1: Tensor, z2: Tensor, generator: torch.Generator, targets=None) -> Tensor:
        p = self.sketch(z1.shape[0], generator, z1.device)
        h1, h2 = self.project(p @ z1), self.project(p @ z2)
        return 0.5 * (info_nce(h1, h2, self.tau, False) + info_nce(h2, h1, self.tau, False))


def _bgrl_mlp(dim: int, dropout: float) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(dim, dim), torch.nn.BatchNorm1d(dim), torch.nn.PReLU(),
                               torch.nn.Dropout(dropout))


class BGRL(torch.nn.Module):
    """BGRL's heads and bootstrap loss; the target representations come from the caller."""

    needs_target = True

    def __init__(self, dim: int, dropout: float = 0.2):
        super().__init__()
        self.batch_norm = torch.nn.BatchNorm1d(dim)
        self.projector = _bgrl_mlp(dim, dropout)
        self.predictor = _bgrl_mlp(dim, dropout)

    def forward(self, z1: Tensor, z2: Tensor, generator: torch.Generator, targets: tuple[Tensor, Tensor]) -> Tensor:
        q1 = self.predictor(self.projector(self.batch_norm(z1)))
        q2 = self.predictor(self.projector(self.batch_norm(z2)))
        with torch.no_grad():  # the reference code runs the online heads on the target branch
            t1 = self.projector(self.batch_norm(targets[0]))
            t2 = self.projector(self.batch_norm(targets[1]))
        agreement = F.cosine_similarity(t1, q2, dim=-1).mean() + F.cosine_similarity(t2, q1, dim=-1).mean()
        return 1.0 - 0.5 * agreement


def make_objective(name: str, dim: int, tau: float, bgrl_dropout: float, costa_ratio: float) -> torch.nn.Module:
    if name == "grace":
        return GRACE(dim, tau)
    if name == "costa":
        return COSTA(dim, tau, costa_ratio)
    if name == "bgrl":
        return BGRL(dim, bgrl_dropout)
    raise ValueError(f"pre-training method {name!r} is not one of {OBJECTIVES}")


# ---------------------------------------------------------------------------- anchors
def anchor_batches(layout: NodeLayout, batch_size: int, order: str, generator: torch.Generator) -> list[Tensor]:
    """One epoch of anchor batches (module docstring): node ids of users (and the pad user),
    then of items (and the pad item), each shuffled; ``mixed`` shuffles them together."""
    users = torch.arange(layout.user_rows)
    items = layout.user_rows + torch.arange(layout.item_rows)
    if order == "mixed":
        pool = torch.cat([users, items])
        groups = [pool[torch.randperm(pool.numel(), generator=generator)]]
    else:
        groups = [users[torch.randperm(users.numel(), generator=generator)],
                  items[torch.randperm(items.numel(), generator=generator)]]
    return [batch for group in groups for batch in group.split(batch_size) if batch.numel() >= 2]


# ---------------------------------------------------------------------------- the model
class GraphPart:
    """One graph the loss runs on, with the nodes whose anchors it scores (``None`` = all)."""

    def __init__(self, graph: UnifiedGraph, members: Optional[Tensor] = None):
        self.graph = graph
        self.members = members  # bool [num_nodes] or None

    def to(self, device) -> "GraphPart":
        return GraphPart(self.graph.to(device), None if self.members is None else self.members.to(device))


class MultiDomainPretraining(torch.nn.Module):
    r"""ID tables (Eq. 1), coordinators (Eq. 3), encoder and self-supervised objective over the
    unified graph(s); :meth:`forward` is the loss of one batch of anchors (module docstring).

    Args:
        layout: the unified node layout.
        parts: the graphs the loss runs on, already on the module's device — one unified graph
            (HAGO, HeterGO, HomoGO, w/o GO ``union``), or one per domain with its member nodes
            (w/o GO ``separate``: losses summed over domains, user rows shared).
        encoder: a module ``encoder(x, WeightedGraph) -> [N, d]`` (:mod:`.encoders`).
        objective: :class:`GRACE` | :class:`COSTA` | :class:`BGRL`.
        augmentation: the views' augmentation.
        embedding_dim: ``d``.
        adaptive: coordinator weights are ReLU(cos) (HAGO); ``False`` = all 1 (HeterGO, HomoGO).
        detach_node: stop-gradient on the node side of the weights (reference code).
        item_weight_source: ``item_coords`` | ``user_coords_refcode``.
        ema: BGRL's target-encoder decay.
    """

    def __init__(self, layout: NodeLayout, parts: list[GraphPart], encoder: torch.nn.Module,
                 objective: torch.nn.Module, augmentation: GraphAugmentation, embedding_dim: int = 64,
                 adaptive: bool = True, detach_node: bool = True, item_weight_source: str = "item_coords",
                 ema: float = 0.99):
        super().__init__()
        self.layout = layout
        self.parts = parts
        self.user_embedding = torch.nn.Embedding(layout.user_rows, embedding_dim)
        self.item_embedding = torch.nn.Embedding(layout.item_rows, embedding_dim)
        torch.nn.init.xavier_normal_(self.user_embedding.weight)
        torch.nn.init.xavier_normal_(self.item_embedding.weight)
        self.coordinators = HeterogeneousGraphCoordinators(layout.num_coords, embedding_dim) if layout.num_coords else None
        self.encoder = encoder
        self.objective = objective
        self.augmentation = augmentation
        self.adaptive = adaptive and self.coordinators is not None
        self.detach_node = detach_node
        self.item_weight_source = item_weight_source
        self.ema = ema
        has_weights = any(True for _ in encoder.parameters())
        # BGRL's EMA target encoder; with a parameter-free encoder it is the encoder itself
        self.target_encoder = None
        if getattr(objective, "needs_target", False) and has_weights:
            self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)

    # ------------------------------------------------------------------ pieces
    def node_features(self) -> Tensor:
        """X = [E_U ; E_I ; E_C] in node-id order."""
        tables = [self.user_embedding.weight, self.item_embedding.weight]
        if self.coordinators is not None:
            tables.append(self.coordinators.embedding.weight)
        return torch.cat(tables)

    def pair_weights(self, graph: UnifiedGraph, x: Tensor) -> Optional[Tensor]:
        """The coordinator-node weights of this step (``None`` = all 1, or no coordinators)."""
        if not self.adaptive or not graph.blocks:
            return None
        return self.coordinators.pair_weights(graph, x, self.detach_node, self.item_weight_source)

    @torch.no_grad()
    def update_target_encoder(self) -> None:
        r""":math:`\theta_{tgt} \leftarrow m\,\theta_{tgt} + (1 - m)\,\theta` (BGRL, before each step)."""
        if self.target_encoder is None:
            return
        for target, online in zip(self.target_encoder.parameters(), self.encoder.parameters()):
            target.mul_(self.ema).add_(online.detach(), alpha=1.0 - self.ema)

    # ------------------------------------------------------------------ one step
    def forward(self, anchors: Tensor, generator: torch.Generator) -> Tensor:
        self.update_target_encoder()
        x = self.node_features()
        total = x.new_zeros(())
        for part in self.parts:
            rows = anchors if part.members is None else anchors[part.members[anchors]]
            if rows.numel() < 2:
                continue
            weight = part.graph.weights(self.pair_weights(part.graph, x))
            views = []
            for _ in range(2):
                view_weight = self.augmentation.drop_edges(part.graph, weight, generator)
                view_x = self.augmentation.mask_features(x, generator)
                views.append((view_x, WeightedGraph(part.graph.pattern, view_weight)))
            z = [self.encoder(vx, vg) for vx, vg in views]
            targets = None
            if getattr(self.objective, "needs_target", False):
                if self.target_encoder is None:
                    targets = (z[0][rows].detach(), z[1][rows].detach())
                else:
                    with torch.no_grad():
                        targets = tuple(self.target_encoder(vx, vg)[rows] for vx, vg in views)
            total = total + self.objective(z[0][rows], z[1][rows], generator, targets)
        return total

    # ------------------------------------------------------------------ after training
    @torch.no_grad()
    def final_pair_weights(self, part: int = 0) -> Optional[Tensor]:
        """Coordinator-node weights from the current tables (the state tuning inherits)."""
        graph = self.parts[part].graph
        if not graph.blocks:
            return None
        weights = self.pair_weights(graph, self.node_features())
        return torch.ones(graph.num_pairs, device=self.user_embedding.weight.device) if weights is None else weights

    @torch.no_grad()
    def encode(self) -> Tensor:
        """The encoder's output on the first (unified) graph, without augmentation."""
        x = self.node_features()
        graph = self.parts[0].graph
        return self.encoder(x, WeightedGraph(graph.pattern, graph.weights(self.pair_weights(graph, x))))

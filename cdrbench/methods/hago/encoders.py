r"""The graph encoders HAGO pre-trains and prompts (paper §3.1, Table 4; spec §3 Eq. 2, §7).

Every encoder maps node features ``x [N, d]`` and a :class:`WeightedGraph` (a fixed CSR pattern
plus one weight per entry, 0 = no message) to node representations ``[N, d]``:

* :class:`LightGCN` — parameter-free :math:`E^{(l+1)} = D^{-1/2} A D^{-1/2} E^{(l)}` with the
  *weighted* in-degree :math:`D` and no self-loops (PyG ``LGConv(normalize=True)`` with
  ``edge_weight``, recomputed on every call), output the last layer ("LightGCN-single", the paper
  and the reference code) or the mean of layers 0..L (``encoder.layer_combination=mean``);
* :class:`GCN` — ``GCNConv(d, d)`` layers (symmetric normalisation with self-loops, edge weights
  used), ReLU between layers, none after the last;
* :class:`GAT` — ``GATConv(d, d, heads=1, edge_dim=1)`` layers with ReLU between; the edge weight
  is the one-dimensional edge feature and weight-0 edges are left out of message passing (spec §7:
  not stated in the paper, cdrbench's choice).

LightGCN and GCN propagate through :func:`~cdrbench.models.sparse.weighted_spmm`, differentiable
in the weights (the coordinators learn through them); GCN keeps PyG's ``GCNConv`` parameters and
initialisation and computes exactly its forward (tested). GAT uses PyG's ``GATConv`` as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import GATConv, GCNConv

from cdrbench.models.sparse import CSRPattern, gcn_norm_values, weighted_spmm

ENCODERS = ("lightgcn", "gcn", "gat")
COMBINATIONS = ("last", "mean")


@dataclass
class WeightedGraph:
    """A graph for one forward pass: the fixed pattern and this pass's entry weights."""

    pattern: CSRPattern
    weight: Tensor

    def edge_index(self) -> tuple[Tensor, Tensor]:
        """``(edge_index [2, E'], weight [E'])`` of the entries with a positive weight."""
        keep = self.weight > 0
        return torch.stack([self.pattern.col[keep], self.pattern.row[keep]]), self.weight[keep]


def _combine(layers: list[Tensor], combination: str) -> Tensor:
    return layers[-1] if combination == "last" else torch.stack(layers).mean(0)


class LightGCN(torch.nn.Module):
    r"""Parameter-free weighted LightGCN (module docstring). ``combination``: ``last`` | ``mean``."""

    def __init__(self, num_layers: int = 2, combination: str = "last"):
        super().__init__()
        self.num_layers = num_layers
        self.combination = combination

    def forward(self, x: Tensor, graph: WeightedGraph) -> Tensor:
        values, _ = gcn_norm_values(graph.pattern, graph.weight)
        layers = [x]
        for _ in range(self.num_layers):
            layers.append(weighted_spmm(graph.pattern, values, layers[-1]))
        return _combine(layers, self.combination)


class GCN(torch.nn.Module):
    r"""Stacked ``GCNConv(d, d)``: :math:`X' = \tilde D^{-1/2}(A + I)\tilde D^{-1/2} X W + b`,
    ReLU between layers (module docstring)."""

    def __init__(self, embedding_dim: int, num_layers: int = 2, combination: str = "last"):
        super().__init__()
        self.convs = torch.nn.ModuleList(GCNConv(embedding_dim, embedding_dim) for _ in range(num_layers))
        self.combination = combination

    def forward(self, x: Tensor, graph: WeightedGraph) -> Tensor:
        values, loops = gcn_norm_values(graph.pattern, graph.weight, add_self_loops=True)
        layers = [x]
        for index, conv in enumerate(self.convs):
            h = conv.lin(layers[-1])
            h = weighted_spmm(graph.pattern, values, h) + loops.unsqueeze(-1) * h + conv.bias
            layers.append(F.relu(h) if index < len(self.convs) - 1 else h)
        return _combine(layers, self.combination)


class GAT(torch.nn.Module):
    """Stacked ``GATConv(d, d, heads=1, edge_dim=1)``, ReLU between layers (module docstring)."""

    def __init__(self, embedding_dim: int, num_layers: int = 2, combination: str = "last"):
        super().__init__()
        self.convs = torch.nn.ModuleList(GATConv(embedding_dim, embedding_dim, heads=1, edge_dim=1)
                                         for _ in range(num_layers))
        self.combination = combination

    def forward(self, x: Tensor, graph: WeightedGraph) -> Tensor:
        edge_index, weight = graph.edge_index()
        edge_attr = weight.unsqueeze(-1)
        layers = [x]
        for index, conv in enumerate(self.convs):
            h = conv(layers[-1], edge_index, edge_attr)
            layers.append(F.relu(h) if index < len(self.convs) - 1 else h)
        return _combine(layers, self.combination)


def make_encoder(name: str, embedding_dim: int, num_layers: int, combination: str) -> torch.nn.Module:
    if name == "lightgcn":
        return LightGCN(num_layers, combination)
    if name == "gcn":
        return GCN(embedding_dim, num_layers, combination)
    if name == "gat":
        return GAT(embedding_dim, num_layers, combination)
    raise ValueError(f"encoder {name!r} is not one of {ENCODERS}")

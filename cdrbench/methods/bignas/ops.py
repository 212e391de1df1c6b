r"""Candidate operations of the BiGNAS search space (paper: "GCN, GAT, GraphSAGE, LightGCN and a
Linear layer"; design spec §2.2).

Every operation maps node features ``x`` of shape ``[N, in_dim]`` and a
:class:`~cdrbench.data.graph.Graph` to ``[N, out_dim]``:

.. math::
    o(\mathbf{X}, \mathcal{G}) \in \mathbb{R}^{N \times h}.

Which graph form each op reads (checked with torch 2.13 CPU / PyG 2.8.1, spec §4.3):

* ``gcn`` and ``lightgcn`` multiply with the precomputed normalised CSR adjacency
  (``graph.adj_self_loops`` / ``graph.adj``) through :func:`cdrbench.models.sparse.spmm`, which
  supports double backward and is several times faster on CPU than message passing over
  ``edge_index`` (and than torch's own CSR backward, which rebuilds the transpose every call).
* ``gat``, ``gatv2`` and ``sage`` use ``graph.edge_index``: handed a sparse CSR adjacency they
  dispatch to ``_segment_reduce`` / ``_sparse_mm_reduce_impl``, whose backward is not
  differentiable, so the Neumann hypergradient (Hessian-vector products) would fail.
"""

from __future__ import annotations

from typing import Callable, Dict

import torch
from torch import Tensor
from torch.nn import Linear, Module
from torch_geometric.nn import GATConv, GATv2Conv, GCNConv, SAGEConv

from cdrbench.data.graph import Graph
from cdrbench.models.sparse import spmm


class GraphOp(Module):
    """Base class: ``forward(x, graph) -> [N, out_dim]``."""

    in_dim: int
    out_dim: int

    def forward(self, x: Tensor, graph: Graph) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_dim}, {self.out_dim})"


class GCNOp(GraphOp):
    r"""GCN (Kipf & Welling, 2017) with self-loops and bias:

    .. math::
        \mathbf{X}' = \tilde{\mathbf{D}}^{-1/2}(\mathbf{A} + \mathbf{I})
        \tilde{\mathbf{D}}^{-1/2} \mathbf{X} \mathbf{W} + \mathbf{b}.

    Numerically equal to ``GCNConv(in_dim, out_dim)`` on ``graph.edge_index``. The wrapped
    ``GCNConv`` has ``normalize=False, add_self_loops=False`` because it is fed the already
    normalised ``graph.adj_self_loops``; its parameter names (``conv.lin.weight``, ``conv.bias``)
    are those of a plain ``GCNConv``.
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.conv = GCNConv(in_dim, out_dim, normalize=False, add_self_loops=False, bias=True)

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()

    def forward(self, x: Tensor, graph: Graph) -> Tensor:
        # Same arithmetic as GCNConv.forward on a sparse adjacency (lin -> spmm -> bias), but a
        # direct spmm skips MessagePassing's per-call input inspection.
        out = spmm(graph.adj_self_loops, self.conv.lin(x))
        return out + self.conv.bias


class GATOp(GraphOp):
    r"""Single-head GAT (Veličković et al., 2018), LeakyReLU slope 0.2, no attention dropout,
    no self-loops (spec §2.2; the reference code's ``gat`` op):

    .. math::
        \mathbf{x}'_i = \sum_{j \in \mathcal{N}(i)} \alpha_{ij} \mathbf{W}\mathbf{x}_j + \mathbf{b},
        \quad \alpha_{ij} = \mathrm{softmax}_j\big(\mathrm{LeakyReLU}(\mathbf{a}^\top
        [\mathbf{W}\mathbf{x}_i \,\|\, \mathbf{W}\mathbf{x}_j])\big).
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.conv = GATConv(in_dim, out_dim, heads=1, add_self_loops=False)

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()

    def forward(self, x: Tensor, graph: Graph) -> Tensor:
        return self.conv(x, graph.edge_index)


class GATv2Op(GraphOp):
    r"""Single-head GATv2 (Brody et al., 2022) without self-loops: the op the reference code's
    default space actually uses (``refcode`` profile, spec §8 flag 1)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.conv = GATv2Conv(in_dim, out_dim, heads=1, add_self_loops=False)

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()

    def forward(self, x: Tensor, graph: Graph) -> Tensor:
        return self.conv(x, graph.edge_index)


class SAGEOp(GraphOp):
    r"""GraphSAGE (Hamilton et al., 2017):

    .. math::
        \mathbf{x}'_i = \mathbf{W}_1 \mathbf{x}_i + \mathbf{W}_2 \cdot
        \mathrm{aggr}_{j \in \mathcal{N}(i)} \mathbf{x}_j + \mathbf{b},

    ``aggr`` = ``mean`` by default (spec ``sage_aggr``). The mean aggregation is a sparse matmul
    with :attr:`Graph.adj_mean` (twice differentiable, several times faster than scatter-based
    message passing on CPU); other aggregations go through ``SAGEConv`` on ``edge_index``. The
    parameters are those of ``SAGEConv`` either way, and the outputs are equal (tested).
    """

    def __init__(self, in_dim: int, out_dim: int, aggr: str = "mean"):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.conv = SAGEConv(in_dim, out_dim, aggr=aggr)

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()

    def forward(self, x: Tensor, graph: Graph) -> Tensor:
        if self.conv.aggr != "mean":
            return self.conv(x, graph.edge_index)
        mean, mean_t = graph.adj_mean
        return self.conv.lin_l(spmm(mean, x, mean_t)) + self.conv.lin_r(x)


class LightGCNOp(GraphOp):
    r"""Parameter-free LightGCN propagation (He et al., 2020):

    .. math::
        \mathbf{X}' = \mathbf{D}^{-1/2} \mathbf{A} \mathbf{D}^{-1/2} \mathbf{X},

    equal to ``LGConv(normalize=True)`` on ``graph.edge_index``. It keeps the width, so
    ``in_dim`` must equal ``out_dim``.
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        if in_dim != out_dim:
            raise ValueError(
                f"lightgcn keeps the feature width: in_dim ({in_dim}) must equal out_dim ({out_dim})"
            )
        self.in_dim, self.out_dim = in_dim, out_dim

    def reset_parameters(self) -> None:
        pass

    def forward(self, x: Tensor, graph: Graph) -> Tensor:
        return spmm(graph.adj, x)


class LinearOp(GraphOp):
    r""":math:`\mathbf{X}' = \mathbf{X}\mathbf{W} + \mathbf{b}`; edges are ignored."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.lin = Linear(in_dim, out_dim)

    def reset_parameters(self) -> None:
        self.lin.reset_parameters()

    def forward(self, x: Tensor, graph: Graph) -> Tensor:
        return self.lin(x)


OpFactory = Callable[[int, int, str], GraphOp]

#: name -> factory ``(in_dim, out_dim, sage_aggr) -> GraphOp``.
OPS: Dict[str, OpFactory] = {
    "gcn": lambda in_dim, out_dim, sage_aggr: GCNOp(in_dim, out_dim),
    "gat": lambda in_dim, out_dim, sage_aggr: GATOp(in_dim, out_dim),
    "gatv2": lambda in_dim, out_dim, sage_aggr: GATv2Op(in_dim, out_dim),
    "sage": lambda in_dim, out_dim, sage_aggr: SAGEOp(in_dim, out_dim, aggr=sage_aggr),
    "lightgcn": lambda in_dim, out_dim, sage_aggr: LightGCNOp(in_dim, out_dim),
    "linear": lambda in_dim, out_dim, sage_aggr: LinearOp(in_dim, out_dim),
}


def check_op_names(space) -> None:
    """Raise ``ValueError`` naming the valid ops if ``space`` is empty or has unknown/duplicate names."""
    space = list(space)
    if not space:
        raise ValueError(f"empty operation space; valid ops: {sorted(OPS)}")
    unknown = [name for name in space if name not in OPS]
    if unknown:
        raise ValueError(f"unknown BiGNAS op(s) {unknown}; valid ops: {sorted(OPS)}")
    if len(set(space)) != len(space):
        raise ValueError(f"duplicate ops in space {space}")


def make_op(name: str, in_dim: int, out_dim: int, sage_aggr: str = "mean") -> GraphOp:
    """Build candidate operation ``name`` mapping ``in_dim -> out_dim``."""
    if name not in OPS:
        raise ValueError(f"unknown BiGNAS op {name!r}; valid ops: {sorted(OPS)}")
    return OPS[name](in_dim, out_dim, sage_aggr)

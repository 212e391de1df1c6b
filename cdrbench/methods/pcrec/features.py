r"""Structural node features of a subgraph (spec ``pcrec.md`` §3.3; GCC ``data_util.py``).

PCRec's encoder sees structure only (no ids), so the features of a node in a sampled subgraph
with :math:`n` nodes are, concatenated (49 dimensions by default):

* **positional vectors** (``pos_dim`` = 32): the eigenvectors of the :math:`k = \min(n - 2,
  \text{pos\_dim})` largest eigenvalues of :math:`N = D^{-1/2} A D^{-1/2}` (degrees clipped to
  at least 1; the trivial eigenvector is one of them), each *row* L2-normalised, zero-padded to
  ``pos_dim`` columns (column :math:`j < k` holds the :math:`(k - j)`-th largest, as
  ``scipy.sparse.linalg.eigsh(which="LA")`` returns them); all zeros when :math:`n \le 2`;
* **degree** inside the subgraph, embedded by the encoder (``Embedding(max_degree + 1, 16)``);
* **ego flag**: 1 for the seed (local node 0), else 0.

Eigenvector signs are arbitrary; GCC's ARPACK start vector makes them random, and here each
eigenvector's sign is flipped with probability 1/2 from the batch's seeded generator
(``random_sign``). The eigendecomposition is batched: graphs are bucketed by size (multiples of
32 nodes), each bucket is one dense ``[G, n_max, n_max]`` ``torch.linalg.eigh`` whose padding
slots carry -10 on the diagonal, so their eigenvalues sort below every real one (those lie in
[-1, 1]) and the last :math:`k` columns are the graph's :math:`k` largest eigenpairs. PyG's
``AddLaplacianEigenvectorPE`` differs (it drops the trivial vector and neither pads nor
normalises rows).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from cdrbench.methods.pcrec.sampling import Subgraphs

_PAD_EIGENVALUE = -10.0
_BUCKET = 32


@dataclass
class GraphBatch:
    """Encoder input: a batch of subgraphs with their node features."""

    pos: Tensor  # [M, pos_dim] float32
    degree: Tensor  # [M] int64, degree inside the subgraph
    ego: Tensor  # [M] float32, 1 at each graph's seed
    edge_index: Tensor  # [2, E] into the batch's nodes
    batch: Tensor  # [M] graph of each node
    num_graphs: int

    def to(self, device) -> "GraphBatch":
        return GraphBatch(**{f.name: (v.to(device) if isinstance(v := getattr(self, f.name), Tensor) else v)
                             for f in fields(self)})

    @property
    def num_nodes(self) -> int:
        return self.batch.numel()


def robust_eigh(matrices: Tensor) -> tuple[Tensor, Tensor]:
    """``torch.linalg.eigh`` of a batch of symmetric matrices that never gives up or returns NaN:
    LAPACK's divide-and-conquer driver can fail to converge, or return non-finite values, on
    matrices with many repeated eigenvalues (subgraphs of a star-like bipartite graph, in
    float32). Such a batch is retried in float64, and a batch that still fails is solved one
    matrix at a time with scipy's ``evr`` driver (a different algorithm, MRRR); a matrix even that
    cannot solve gets zero eigenpairs (no positional signal, like a graph of <= 2 nodes)."""

    def finite(values: Tensor, vectors: Tensor) -> bool:
        return bool(torch.isfinite(values).all() and torch.isfinite(vectors).all())

    for attempt in (matrices, matrices.double()):
        try:
            values, vectors = torch.linalg.eigh(attempt)
        except torch.linalg.LinAlgError:
            continue
        if finite(values, vectors):
            return values.to(matrices), vectors.to(matrices)
    import scipy.linalg

    values = torch.zeros(matrices.shape[:-1], dtype=torch.float64)
    vectors = torch.zeros(matrices.shape, dtype=torch.float64)
    for index, matrix in enumerate(matrices.double().cpu().numpy()):
        try:
            value, vector = scipy.linalg.eigh(matrix, driver="evr")
        except (ValueError, scipy.linalg.LinAlgError):
            continue
        value, vector = torch.from_numpy(value), torch.from_numpy(vector)
        if finite(value, vector):
            values[index], vectors[index] = value, vector
    return values.to(matrices), vectors.to(matrices)


def top_eigenpairs(edge_index: Tensor, ptr: Tensor, k_max: int) -> tuple[Tensor, Tensor, Tensor]:
    r"""Eigenpairs of :math:`D^{-1/2} A D^{-1/2}` of every graph of a batch.

    Returns ``(values [G, k_max], vectors [M, k_max], k [G])``: graph ``g`` has ``k[g] =
    min(n_g - 2, k_max)`` (at least 0) eigenpairs, in ascending order of eigenvalue in columns
    ``0 .. k[g]-1`` (the largest last), zero elsewhere; vectors are not normalised.
    """
    sizes = ptr[1:] - ptr[:-1]
    num_graphs = sizes.numel()
    total = int(ptr[-1])
    k = torch.clamp(torch.minimum(sizes - 2, torch.full_like(sizes, k_max)), min=0)
    values = torch.zeros(num_graphs, k_max)
    vectors = torch.zeros(total, k_max)
    graph_of = torch.repeat_interleave(torch.arange(num_graphs), sizes)
    local = torch.arange(total) - ptr[:-1][graph_of]
    src, dst = edge_index[0], edge_index[1]
    edge_graph = graph_of[src]
    buckets = torch.div(sizes + _BUCKET - 1, _BUCKET, rounding_mode="floor")
    for bucket in torch.unique(buckets[k > 0]).tolist():
        members = ((buckets == bucket) & (k > 0)).nonzero().flatten()
        n_max = int(sizes[members].max())
        slot = torch.full((num_graphs,), -1, dtype=torch.long)
        slot[members] = torch.arange(members.numel())
        adj = torch.zeros(members.numel(), n_max, n_max)
        in_bucket = slot[edge_graph] >= 0
        adj.index_put_(
            (slot[edge_graph[in_bucket]], local[src[in_bucket]], local[dst[in_bucket]]),
            torch.ones(int(in_bucket.sum())), accumulate=True,
        )
        inv_sqrt = adj.sum(-1).clamp(min=1.0).pow(-0.5)
        norm = inv_sqrt.unsqueeze(-1) * adj * inv_sqrt.unsqueeze(-2)
        padding = torch.arange(n_max).unsqueeze(0) >= sizes[members].unsqueeze(1)
        norm = norm + torch.diag_embed(padding.float() * _PAD_EIGENVALUE)
        evals, evecs = robust_eigh(norm)
        # column j < k of graph g holds eigenpair n_max - k + j (the k largest, ascending)
        cols = n_max - k[members].unsqueeze(1) + torch.arange(k_max).unsqueeze(0)
        valid = torch.arange(k_max).unsqueeze(0) < k[members].unsqueeze(1)
        cols = torch.where(valid, cols, torch.zeros_like(cols))
        picked_vals = torch.gather(evals, 1, cols) * valid
        values[members] = picked_vals
        node_mask = slot[graph_of] >= 0
        node_slot = slot[graph_of[node_mask]]
        rows = evecs[node_slot, local[node_mask]]  # [m, n_max]
        vectors[node_mask] = torch.gather(rows, 1, cols[node_slot]) * valid[node_slot]
    return values, vectors, k


def positional_features(edge_index: Tensor, ptr: Tensor, dim: int = 32,
                        generator: Optional[torch.Generator] = None) -> Tensor:
    """``[M, dim]`` row-normalised eigenvector features; with a ``generator``, every
    eigenvector's sign is flipped with probability 1/2 (independently per graph)."""
    _, vectors, _ = top_eigenpairs(edge_index, ptr, dim)
    if generator is not None:
        sizes = ptr[1:] - ptr[:-1]
        signs = torch.randint(0, 2, (sizes.numel(), dim), generator=generator).float() * 2 - 1
        vectors = vectors * torch.repeat_interleave(signs, sizes, dim=0)
    return F.normalize(vectors, p=2, dim=1)


def featurize(subgraphs: Subgraphs, pos_dim: int = 32, generator: Optional[torch.Generator] = None) -> GraphBatch:
    """Encoder input of a batch of subgraphs (``generator`` = random eigenvector signs)."""
    m = int(subgraphs.ptr[-1])
    batch = subgraphs.batch
    ego = torch.zeros(m)
    ego[subgraphs.ptr[:-1][subgraphs.sizes > 0]] = 1.0
    degree = torch.bincount(subgraphs.edge_index[1], minlength=m)
    pos = positional_features(subgraphs.edge_index, subgraphs.ptr, pos_dim, generator) if pos_dim > 0 \
        else torch.zeros(m, 0)
    return GraphBatch(pos=pos, degree=degree, ego=ego, edge_index=subgraphs.edge_index, batch=batch,
                      num_graphs=subgraphs.num_graphs)

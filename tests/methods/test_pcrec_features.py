"""PCRec's node features: batched Laplacian eigenvectors against scipy/numpy, degree, ego flag
(spec pcrec.md §3.3, §10.2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.linalg import eigsh

from cdrbench.methods.pcrec import features as features_module
from cdrbench.methods.pcrec.features import featurize, positional_features, robust_eigh, top_eigenpairs
from cdrbench.methods.pcrec.sampling import Subgraphs

GAP = 1e-3  # eigenvalues closer than this have no well-defined eigenvectors: not compared


def random_connected_graph(n: int, rng: np.random.Generator) -> np.ndarray:
    """Symmetric 0/1 adjacency: a random spanning tree plus random extra edges."""
    adj = np.zeros((n, n))
    order = rng.permutation(n)
    for pos in range(1, n):
        a, b = order[pos], order[rng.integers(pos)]
        adj[a, b] = adj[b, a] = 1
    extra = rng.random((n, n)) < 2.0 / n
    extra = np.triu(extra, 1)
    adj = np.maximum(adj, extra + extra.T)
    return adj


def normalized(adj: np.ndarray) -> np.ndarray:
    inv = adj.sum(1).clip(min=1) ** -0.5
    return inv[:, None] * adj * inv[None, :]


def batch_of(adjs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    ptr, edges, offset = [0], [], 0
    for adj in adjs:
        src, dst = np.nonzero(adj)
        edges.append(np.stack([src, dst]) + offset)
        offset += adj.shape[0]
        ptr.append(offset)
    return torch.as_tensor(np.concatenate(edges, axis=1), dtype=torch.long), torch.tensor(ptr)


def non_degenerate_graphs(sizes, seed=0):
    """One random connected graph per size whose top-k eigenvalues are separated by GAP."""
    rng = np.random.default_rng(seed)
    graphs = []
    for n in sizes:
        k = min(n - 2, 32)
        for _ in range(200):
            adj = random_connected_graph(n, rng)
            values = np.linalg.eigvalsh(normalized(adj))
            top = values[-(k + 1):] if k + 1 <= n else values
            if np.min(np.diff(top)) > GAP:
                graphs.append(adj)
                break
        else:  # pragma: no cover - the generator always finds one for these sizes
            pytest.fail(f"no non-degenerate graph with {n} nodes")
    return graphs


def test_eigenpairs_match_scipy_eigsh_and_numpy_eigh_on_3_to_40_nodes():
    sizes = list(range(3, 41))
    graphs = non_degenerate_graphs(sizes)
    edge_index, ptr = batch_of(graphs)  # one batch: exercises the size buckets and the padding
    values, vectors, k = top_eigenpairs(edge_index, ptr, 32)
    pos = positional_features(edge_index, ptr, 32)
    for g, adj in enumerate(graphs):
        n, kg = adj.shape[0], min(adj.shape[0] - 2, 32)
        assert int(k[g]) == kg
        lo, hi = int(ptr[g]), int(ptr[g + 1])
        dense = normalized(adj)
        ref_vals, ref_vecs = np.linalg.eigh(dense)
        ref_vals, ref_vecs = ref_vals[n - kg :], ref_vecs[:, n - kg :]  # the k largest, ascending
        arpack_vals, arpack_vecs = eigsh(csr_matrix(dense), k=kg, which="LA")
        np.testing.assert_allclose(values[g, :kg].numpy(), ref_vals, atol=1e-4)
        np.testing.assert_allclose(arpack_vals, ref_vals, atol=1e-6)
        np.testing.assert_allclose(np.abs(vectors[lo:hi, :kg].numpy()), np.abs(ref_vecs), atol=2e-4)
        np.testing.assert_allclose(np.abs(vectors[lo:hi, :kg].numpy()), np.abs(arpack_vecs), atol=2e-4)
        # GCC's feature: rows of the eigenvector matrix L2-normalised, zero-padded to 32 columns
        rows = ref_vecs / np.linalg.norm(ref_vecs, axis=1, keepdims=True)
        np.testing.assert_allclose(np.abs(pos[lo:hi, :kg].numpy()), np.abs(rows), atol=5e-4)
        assert torch.all(pos[lo:hi, kg:] == 0)
        np.testing.assert_allclose(pos[lo:hi].norm(dim=1).numpy(), 1.0, atol=1e-5)


def test_graphs_with_at_most_two_nodes_get_zero_vectors():
    adjs = [np.zeros((1, 1)), np.array([[0.0, 1.0], [1.0, 0.0]]), random_connected_graph(6, np.random.default_rng(1))]
    edge_index, ptr = batch_of(adjs)
    pos = positional_features(edge_index, ptr, 32)
    assert torch.all(pos[:3] == 0)  # the 1-node and the 2-node graph
    assert torch.all(pos[3:, 4:] == 0) and torch.all(pos[3:, :4].abs().sum(1) > 0)  # k = 4 for 6 nodes


def test_random_signs_flip_whole_eigenvectors_only():
    graphs = non_degenerate_graphs([7, 12, 25], seed=3)
    edge_index, ptr = batch_of(graphs)
    plain = positional_features(edge_index, ptr, 32)
    flipped = positional_features(edge_index, ptr, 32, torch.Generator().manual_seed(0))
    torch.testing.assert_close(plain.abs(), flipped.abs())
    for g in range(3):
        lo, hi = int(ptr[g]), int(ptr[g + 1])
        ratio = flipped[lo:hi] / torch.where(plain[lo:hi] == 0, torch.ones(1), plain[lo:hi])
        nonzero = plain[lo:hi].abs() > 1e-6
        for col in range(32):  # one sign per column and graph
            signs = torch.sign(ratio[nonzero[:, col], col])
            assert signs.numel() == 0 or torch.all(signs == signs[0])
    assert not torch.equal(plain, flipped)


def test_degree_inside_the_subgraph_and_the_ego_flag():
    # graph 0: path 0-1-2; graph 1: star centre 0 with 3 leaves
    nodes = torch.tensor([10, 11, 12, 20, 21, 22, 23])
    ptr = torch.tensor([0, 3, 7])
    pairs = [(0, 1), (1, 2), (3, 4), (3, 5), (3, 6)]
    edge_index = torch.tensor([[a for a, b in pairs] + [b for a, b in pairs], [b for a, b in pairs] + [a for a, b in pairs]])
    batch = featurize(Subgraphs(nodes, ptr, edge_index, torch.zeros(2, dtype=torch.long)), 32)
    assert batch.degree.tolist() == [1, 2, 1, 3, 1, 1, 1]
    assert batch.ego.tolist() == [1, 0, 0, 1, 0, 0, 0]
    assert batch.batch.tolist() == [0, 0, 0, 1, 1, 1, 1] and batch.num_graphs == 2
    assert batch.pos.shape == (7, 32)


@pytest.mark.parametrize("failures", [1, 2])
@pytest.mark.parametrize("how", ["raise", "nan"])
def test_eigh_that_does_not_converge_is_retried_to_the_same_eigenpairs(monkeypatch, failures, how):
    """LAPACK's float32 eigh can fail on matrices with many repeated eigenvalues; the retry (float64,
    then scipy's evr driver per matrix) gives the eigenpairs of the same matrices."""
    star = torch.zeros(2, 6, 6)
    star[:, 0, 1:] = star[:, 1:, 0] = 1.0  # a star: eigenvalue 0 repeated 4 times
    star[1] = star[1] / 2 + torch.diag(torch.arange(6.0))
    expected_values, _ = torch.linalg.eigh(star.double())
    real_eigh, calls = torch.linalg.eigh, {"n": 0}

    def failing(matrices):
        calls["n"] += 1
        if calls["n"] <= failures:
            if how == "raise":
                raise torch.linalg.LinAlgError("the algorithm failed to converge")
            values, vectors = real_eigh(matrices)
            return values * float("nan"), vectors
        return real_eigh(matrices)

    monkeypatch.setattr(features_module.torch.linalg, "eigh", failing)
    values, vectors = robust_eigh(star)
    assert values.dtype == star.dtype and torch.allclose(values.double(), expected_values, atol=1e-5)
    rebuilt = vectors @ torch.diag_embed(values) @ vectors.transpose(1, 2)
    assert torch.allclose(rebuilt, star, atol=1e-4)

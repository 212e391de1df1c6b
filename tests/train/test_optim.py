"""Sparse embedding gradients and LazyAdam: what the lazy update keeps equal to Adam, and what not."""

from __future__ import annotations

import io

import pytest
import torch

from cdrbench.errors import ConfigError
from cdrbench.methods.baselines import CollaborativeFiltering
from cdrbench.models import LightGCNEncoder, MFEncoder, NGCFEncoder
from cdrbench.train.optim import LazyAdam, supports_sparse_gradients


def sparse_and_dense(rows: int = 10, dim: int = 4, weight_decay: float = 0.0):
    torch.manual_seed(0)
    sparse = torch.nn.Embedding(rows, dim, sparse=True)
    dense = torch.nn.Embedding(rows, dim)
    dense.weight.data.copy_(sparse.weight.data)
    kwargs = dict(lr=0.1, weight_decay=weight_decay)
    return sparse, dense, LazyAdam(sparse.parameters(), **kwargs), torch.optim.Adam(dense.parameters(), **kwargs)


def step(module, optimizer, index, target):
    optimizer.zero_grad()
    ((module(index) - target) ** 2).sum().backward()
    optimizer.step()


def test_rows_outside_the_batch_keep_value_and_moments():
    sparse, _, lazy, _ = sparse_and_dense()
    before = sparse.weight.detach().clone()
    batch = torch.tensor([1, 3, 3, 7])  # a repeated row too
    step(sparse, lazy, batch, torch.ones(4, 4))
    untouched = torch.tensor([r for r in range(10) if r not in (1, 3, 7)])
    assert torch.equal(sparse.weight[untouched], before[untouched])
    state = lazy.state[sparse.weight]
    assert torch.count_nonzero(state["exp_avg"][untouched]) == 0
    assert not torch.equal(sparse.weight[batch], before[batch])
    # a second step on other rows leaves the first batch's rows where they were
    after_first = sparse.weight.detach().clone()
    step(sparse, lazy, torch.tensor([0, 2]), torch.ones(2, 4))
    assert torch.equal(sparse.weight[batch], after_first[batch])


def test_first_step_on_touched_rows_equals_dense_adam():
    sparse, dense, lazy, adam = sparse_and_dense(weight_decay=0.01)
    batch = torch.tensor([1, 3, 3, 7])
    target = torch.randn(4, 4, generator=torch.Generator().manual_seed(1))
    step(sparse, lazy, batch, target)
    step(dense, adam, batch, target)
    touched = torch.tensor([1, 3, 7])
    torch.testing.assert_close(sparse.weight[touched], dense.weight[touched], rtol=0, atol=1e-7)
    # dense Adam's coupled L2 moves every row; the lazy update does not
    others = torch.tensor([0, 2, 4, 5, 6, 8, 9])
    assert not torch.allclose(dense.weight[others], sparse.weight[others])


def test_dense_gradients_get_exactly_adam():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    lazy, adam = LazyAdam(a.parameters(), lr=0.01, weight_decay=0.1), torch.optim.Adam(b.parameters(), lr=0.01, weight_decay=0.1)
    x = torch.randn(8, 5)
    for _ in range(5):
        for module, optimizer in ((a, lazy), (b, adam)):
            optimizer.zero_grad()
            module(x).pow(2).sum().backward()
            optimizer.step()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_state_survives_a_weights_only_checkpoint():
    sparse, _, lazy, _ = sparse_and_dense()
    step(sparse, lazy, torch.tensor([2, 4]), torch.ones(2, 4))
    buffer = io.BytesIO()
    torch.save(lazy.state_dict(), buffer)
    buffer.seek(0)
    fresh = LazyAdam(sparse.parameters(), lr=0.1)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert float(fresh.state[sparse.weight]["step"]) == 1.0
    torch.testing.assert_close(fresh.state[sparse.weight]["exp_avg"], lazy.state[sparse.weight]["exp_avg"])


def test_mf_sparse_lookup_gives_a_sparse_gradient_of_the_batch_rows():
    encoder = MFEncoder(num_users=5, num_items=7, embedding_dim=3, sparse=True)
    u, i, j = encoder.batch_embeddings(None, torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 4]))
    ((u * i).sum() - (u * j).sum()).backward()
    grad = encoder.embedding.weight.grad
    assert grad.is_sparse
    assert set(grad.coalesce().indices()[0].tolist()) == {0, 1, 5 + 2, 5 + 3, 5 + 4}
    # the dense and the sparse lookups give the same embeddings
    dense = MFEncoder(num_users=5, num_items=7, embedding_dim=3)
    dense.load_state_dict(encoder.state_dict())
    assert torch.equal(dense.batch_embeddings(None, torch.tensor([0, 1]), torch.tensor([2, 3]))[1], i.detach())


@pytest.mark.parametrize("encoder", [LightGCNEncoder, NGCFEncoder])
def test_propagating_encoders_refuse_sparse(encoder):
    with pytest.raises(ConfigError, match="backbone.sparse=true.*dense"):
        encoder(num_users=3, num_items=4, sparse=True)


def test_sparse_backbone_with_a_dense_optimizer_is_a_config_error(tmp_path):
    from cdrbench.data.benchmark_graphs import clustered_cross_domain

    data = clustered_cross_domain(30, {"tgt": (20, 150)}, "tgt")
    method = CollaborativeFiltering(
        encoder=lambda **kw: MFEncoder(embedding_dim=4, sparse=True, **kw),
        optimizer=lambda params: torch.optim.Adam(params),
    )
    with pytest.raises(ConfigError, match="optimizer=sparse_adam"):
        method.setup(data, torch.device("cpu"), seed=0)
    assert supports_sparse_gradients(LazyAdam(torch.nn.Linear(2, 2).parameters()))
    assert not supports_sparse_gradients(torch.optim.Adam(torch.nn.Linear(2, 2).parameters()))


def test_sparse_bprmf_matches_dense_on_the_first_step():
    """The whole method: one BPR step with sparse gradients + LazyAdam equals dense Adam on the
    rows of the batch, and leaves every other row where it was."""
    from cdrbench.data.benchmark_graphs import clustered_cross_domain

    data = clustered_cross_domain(40, {"tgt": (60, 300)}, "tgt")
    runs = {}
    for sparse in (False, True):
        torch.manual_seed(0)
        method = CollaborativeFiltering(
            encoder=lambda **kw: MFEncoder(embedding_dim=8, sparse=sparse, **kw),
            optimizer=(lambda params: LazyAdam(params, lr=0.01)) if sparse else (lambda params: torch.optim.Adam(params, lr=0.01)),
            batch_size=64,
        )
        method.setup(data, torch.device("cpu"), seed=0)
        before = method.encoder.embedding.weight.detach().clone()
        method.train_epoch(None, 0, lambda batches, **_: [next(iter(batches))])  # one batch
        runs[sparse] = (before, method.encoder.embedding.weight.detach().clone())
    moved = (runs[True][1] != runs[True][0]).any(dim=1)
    assert 0 < int(moved.sum()) < len(moved)
    torch.testing.assert_close(runs[True][1][moved], runs[False][1][moved], rtol=0, atol=1e-7)
    assert torch.equal(runs[True][1][~moved], runs[True][0][~moved])

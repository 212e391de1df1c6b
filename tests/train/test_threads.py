"""trainer.num_threads and where torch's deterministic mode is applied."""

from __future__ import annotations

import pytest
import torch

from cdrbench.app import run
from cdrbench.config import compose
from cdrbench.data.graph import Graph, bipartite_edge_index
from cdrbench.errors import ConfigError
from cdrbench.models import LightGCNEncoder
from cdrbench.train.runtime import needs_deterministic_algorithms, set_num_threads


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_num_threads_is_applied_by_the_app(tmp_path, restore_threads):
    for threads in (2, 1):
        cfg = compose(["stage=prepare", "data=synthetic", f"data.root={tmp_path}", f"trainer.num_threads={threads}",
                       "data.domains.src.reader.num_users=40", "data.domains.tgt.reader.num_users=40"])
        run(cfg, tmp_path / "run")
        assert torch.get_num_threads() == threads


def test_num_threads_zero_keeps_torch_default_and_negative_is_an_error(restore_threads):
    torch.set_num_threads(2)
    assert set_num_threads(0) == 2
    with pytest.raises(ConfigError, match="trainer.num_threads"):
        set_num_threads(-1)


def test_deterministic_mode_only_where_it_changes_results(restore_threads):
    torch.set_num_threads(1)
    assert not needs_deterministic_algorithms(torch.device("cpu"))
    assert needs_deterministic_algorithms(torch.device("cuda"))
    torch.set_num_threads(2)
    assert needs_deterministic_algorithms(torch.device("cpu"))


def test_batch_rows_backward_is_repeatable_with_two_threads_without_deterministic_mode(restore_threads):
    """Popular items repeat within a batch; their gradients must accumulate in a fixed order
    (index_select's backward), or two threads give run-to-run differences."""
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(False)
    torch.manual_seed(0)
    encoder = LightGCNEncoder(num_users=50, num_items=400, embedding_dim=64, num_layers=1)
    edges = bipartite_edge_index(torch.randint(0, 50, (2000,)), torch.randint(0, 400, (2000,)), 50)
    graph = Graph.from_edge_index(edges, 450, 50)
    users = torch.randint(0, 50, (8192,))
    items = torch.randint(0, 30, (8192,))  # heavy repetition
    weight = torch.randn(8192, 64)
    grads = []
    for _ in range(5):
        encoder.zero_grad()
        u, i = encoder.batch_embeddings(graph, users, items)
        ((u * i) * weight).sum().backward()
        grads.append(encoder.embedding.weight.grad.clone())
    assert all(torch.equal(grads[0], g) for g in grads[1:])

"""PCRec's GIN encoder, MoCo queue / momentum / loss and the pre-training schedule
(spec pcrec.md §3.4-3.5, §10.3-10.5)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch_geometric.nn import global_add_pool

from cdrbench.methods.pcrec.features import featurize
from cdrbench.methods.pcrec.gcc import GCCEncoder, MoCo, pretrain_scheduler
from cdrbench.methods.pcrec.sampling import CSRGraph, RWRSampler
from cdrbench.models.losses import info_nce_logits


def toy_views(num_graphs=6, seed=0):
    rng = torch.Generator().manual_seed(seed)
    users, items = 20, 25
    u = torch.arange(users).repeat_interleave(3)
    i = torch.randint(0, items, (u.numel(),), generator=rng) + users
    graph = CSRGraph.from_edge_index(torch.stack([torch.cat([u, i]), torch.cat([i, u])]), users + items)
    sampler = RWRSampler(graph, min_budget=24)
    views = sampler.sample(torch.arange(num_graphs), 2, torch.Generator().manual_seed(seed))
    return [featurize(v, 32, torch.Generator().manual_seed(seed)) for v in views]


def test_input_is_49_dims_and_the_output_has_unit_norm():
    view, _ = toy_views()
    encoder = GCCEncoder()
    assert encoder.node_input(view).shape == (view.num_nodes, 49) and encoder.input_dim == 49
    out = encoder(view)
    assert out.shape == (6, 64)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(6))


def test_readout_sums_the_pooled_heads_of_the_input_and_all_four_layers():
    view, _ = toy_views()
    encoder = GCCEncoder(normalize=False).eval()
    assert len(encoder.heads) == 5 and len(encoder.convs) == 4
    h = encoder.node_input(view)
    reps = [h]
    for conv, norm in zip(encoder.convs, encoder.batch_norms):
        h = F.relu(norm(conv(h, view.edge_index)))
        reps.append(h)
    expected = sum(head(global_add_pool(rep, view.batch, size=view.num_graphs)) for head, rep in zip(encoder.heads, reps))
    torch.testing.assert_close(encoder(view), expected)
    # the double BatchNorm: inside each GIN layer's MLP two, then one more outside
    assert all(sum(isinstance(m, torch.nn.BatchNorm1d) for m in conv.nn) == 2 for conv in encoder.convs)


def test_relabelling_the_nodes_of_a_subgraph_does_not_change_its_embedding():
    view, _ = toy_views()
    encoder = GCCEncoder().eval()
    perm = torch.randperm(view.num_nodes, generator=torch.Generator().manual_seed(1))
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(perm.numel())
    shuffled = type(view)(pos=view.pos[perm], degree=view.degree[perm], ego=view.ego[perm],
                          edge_index=inverse[view.edge_index], batch=view.batch[perm], num_graphs=view.num_graphs)
    torch.testing.assert_close(encoder(shuffled), encoder(view), atol=1e-5, rtol=1e-5)


def test_the_queue_is_a_fifo_of_size_k_with_wraparound():
    moco = MoCo(GCCEncoder(hidden=4), queue_size=5)
    keys = [torch.full((2, 4), float(j)) for j in range(1, 4)]  # 6 keys into 5 slots
    for batch in keys:
        moco.enqueue(batch)
    assert moco.queue.shape == (5, 4)
    assert moco.queue[:, 0].tolist() == [3.0, 1.0, 2.0, 2.0, 3.0]  # slot 0 overwritten by the 6th key
    assert int(moco.queue_ptr) == 1


def test_the_initial_queue_rows_have_expected_squared_norm_one():
    moco = MoCo(GCCEncoder(), queue_size=4096)
    bound = math.sqrt(3 / 64)
    assert moco.queue.abs().max() <= bound
    assert abs(float(moco.queue.pow(2).sum(1).mean()) - 1.0) < 0.02


def test_momentum_update_is_exact_and_leaves_batchnorm_buffers_alone():
    view, key_view = toy_views()
    moco = MoCo(GCCEncoder(), momentum=0.9)
    for p_q, p_k in zip(moco.query.parameters(), moco.key.parameters()):
        assert torch.equal(p_q, p_k)  # the key encoder starts as an exact copy
    moco.train()
    moco(view, key_view)  # moves the key encoder's BatchNorm statistics (batch mode)
    with torch.no_grad():
        for p in moco.query.parameters():
            p.add_(torch.randn_like(p))
    before_k = [p.clone() for p in moco.key.parameters()]
    query = [p.clone() for p in moco.query.parameters()]
    buffers = {n: b.clone() for n, b in moco.key.named_buffers()}
    moco.momentum_update()
    for p_k, old, p_q in zip(moco.key.parameters(), before_k, query):
        assert torch.equal(p_k, old * 0.9 + p_q * (1 - 0.9))
    for name, buffer in moco.key.named_buffers():
        assert torch.equal(buffer, buffers[name]), name


def test_info_nce_is_eq1_and_cross_entropy_with_the_positive_at_index_zero():
    q = torch.tensor([[0.6, 0.8]])
    k_pos = torch.tensor([[1.0, 0.0]])
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    tau = 0.07
    pos, negs = (q * k_pos).sum(-1), q @ queue.T
    by_hand = -math.log(math.exp(0.6 / tau) / (math.exp(0.6 / tau) + math.exp(0.8 / tau) + math.exp(-0.6 / tau)))
    assert abs(float(info_nce_logits(pos, negs, tau)) - by_hand) < 1e-5
    logits = torch.cat([pos[:, None], negs], 1) / tau
    torch.testing.assert_close(info_nce_logits(pos, negs, tau), F.cross_entropy(logits, torch.tensor([0])))


def test_moco_loss_uses_the_queue_before_enqueueing_the_keys():
    view, key_view = toy_views()
    moco = MoCo(GCCEncoder(readout_dropout=0.0), queue_size=16)
    moco.train()
    queue = moco.queue.clone()
    torch.manual_seed(0)
    loss = moco(view, key_view)
    q = moco.query(view)
    with torch.no_grad():
        k = moco.key(key_view)
    torch.testing.assert_close(loss, info_nce_logits((q * k).sum(-1), q @ queue.T, 0.07))
    torch.testing.assert_close(moco.queue[:6], k)
    torch.testing.assert_close(moco.queue[6:], queue[6:])


def test_key_encoder_uses_batch_statistics_and_no_dropout():
    view, key_view = toy_views()
    moco = MoCo(GCCEncoder(readout_dropout=0.5))
    moco.train()
    assert moco.query.training and not moco.key.training and not moco.key.dropout.training
    norms = [m for m in moco.key.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert norms and all(m.training for m in norms)
    with torch.no_grad():
        first, second = moco.key(key_view), moco.key(key_view)
    torch.testing.assert_close(first, second)  # no dropout
    moco.eval()
    assert not any(m.training for m in norms)
    with torch.no_grad():
        running = moco.key(key_view)
    assert not torch.allclose(first, running)  # batch statistics, not the running ones


def test_schedule_warms_up_over_ten_percent_then_decays_linearly_to_zero():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=1.0)
    scheduler = pretrain_scheduler(optimizer, "warmup_linear", total_steps=100, warmup=0.1)
    lrs = []
    for _ in range(101):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == 0.0 and abs(lrs[10] - 1.0) < 1e-12 and abs(lrs[55] - 0.5) < 1e-12 and lrs[100] == 0.0
    assert abs(lrs[5] - 0.5) < 1e-12

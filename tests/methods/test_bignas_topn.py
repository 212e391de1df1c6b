"""BiGNAS ranks target items with its CTR head (the cross-method table scores every method both ways)."""

from __future__ import annotations

import torch

from tests.methods.test_bignas_method import make


def test_score_users_equals_the_ctr_head_on_every_pair_and_ignores_chunking(tmp_path):
    cfg, data, method = make(tmp_path, "trainer.max_epochs=1")
    method.setup(data, torch.device("cpu"), seed=0)
    users = torch.arange(data.num_users)
    n_items = data.num_items(data.target_domain)
    with method.evaluation():
        scores = method.score_users(users)
        pair_users = users.repeat_interleave(n_items)
        pair_items = torch.arange(n_items).repeat(len(users))
        probs = method.predict_ctr(pair_users, pair_items).reshape(len(users), n_items)
        chunked = torch.cat([method.score_users(part) for part in users.split(7)])
    assert scores.shape == (data.num_users, n_items)
    # the split first layer is the same affine map as the head on [h_u || h_v]
    torch.testing.assert_close(torch.sigmoid(scores), probs, rtol=0, atol=1e-6)
    torch.testing.assert_close(chunked, scores, rtol=0, atol=0)
    assert "topn" in method.tasks and "ctr" in method.tasks

"""Sampled-negative top-N evaluation: each valid/test row ranked against N sampled items.

The protocol of DisenCDR- and CoNet-style papers (``eval.negatives=N``): every evaluated
(user, item) pair of the split is a leave-one-out case whose candidates are the positive item and
``N`` items drawn uniformly without replacement from the target items the user never interacted
with (in train, valid or test). HR@K, NDCG@K, MRR@K, ... are computed from the positive's rank
among the ``1 + N`` candidates with :func:`cdrbench.eval.topn.metrics_from_rel` (one positive:
Recall@K = HR@K), ties broken by the full-ranking rule (lower item id first), and averaged over
the cases.

The negatives are drawn once per prepared data set, split, ``N`` and seed, saved beside the
prepared data (``negatives_<split>_n<N>_seed<seed>.npz``) and read back by every later
evaluation, so all methods and runs compare on the same candidates. Full ranking
(:mod:`cdrbench.eval.topn`) stays the default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from cdrbench.errors import ConfigError
from cdrbench.eval.topn import TopNResult, derive_chunk_size, metrics_from_rel

__all__ = ["SampledCandidates", "draw_negatives", "sampled_candidates", "evaluate_sampled"]


@dataclass(frozen=True)
class SampledCandidates:
    """Evaluated cases of one split: ``user[r]``, its positive ``item[r]`` and ``negatives[r]``.
    Cases are sorted by (user, item)."""

    user: np.ndarray  # int64 [R]
    item: np.ndarray  # int64 [R]
    negatives: np.ndarray  # int64 [R, N]


def draw_negatives(
    users: np.ndarray, seen_users: np.ndarray, seen_items: np.ndarray, num_items: int, n: int, seed: int,
    user_label: Callable[[int], str] = str,
) -> np.ndarray:
    """``[len(users), n]`` items per case, uniform without replacement over the items the case's
    user has no interaction with (``seen_*`` lists every (user, item) interaction). Deterministic
    for a given ``seed``; a user with fewer than ``n`` such items is an error."""
    users = np.asarray(users, dtype=np.int64)
    seen = np.unique(np.asarray(seen_users, np.int64) * num_items + np.asarray(seen_items, np.int64))
    seen_per_user = np.bincount(seen // num_items, minlength=int(users.max(initial=0)) + 1)
    available = num_items - seen_per_user[users]
    if users.size and available.min() < n:
        worst = int(np.argmin(available))
        raise ConfigError(
            f"eval.negatives={n}: user {user_label(int(users[worst]))} never interacted with only {int(available[worst])} "
            f"of the {num_items} target items, fewer than the {n} negatives to draw; lower eval.negatives"
        )
    rng = np.random.default_rng(seed)
    out = np.empty((users.size, n), dtype=np.int64)
    # rejection sampling, vectorised over the cases; cases whose user leaves few free items are
    # drawn exactly from the explicit list of those items (rejection would take long there)
    exact = available < 2 * n
    pending = np.flatnonzero(~exact)
    while pending.size:
        free_share = available[pending].min() / num_items
        width = int(np.ceil(1.3 * n / free_share)) + 16
        cand = rng.integers(0, num_items, size=(pending.size, width))
        ok = ~np.isin(users[pending, None] * num_items + cand, seen)
        # only the first draw of an item within a case counts (without replacement)
        keys = (np.arange(pending.size)[:, None] * num_items + cand).ravel()
        first = np.zeros(keys.size, dtype=bool)
        first[np.unique(keys, return_index=True)[1]] = True
        ok &= first.reshape(cand.shape)
        done = ok.sum(axis=1) >= n
        order = np.argsort(~ok[done], axis=1, kind="stable")[:, :n]  # accepted draws, in draw order
        out[pending[done]] = np.take_along_axis(cand[done], order, axis=1)
        pending = pending[~done]
    for case in np.flatnonzero(exact):
        u = users[case]
        taken = seen[(seen >= u * num_items) & (seen < (u + 1) * num_items)] - u * num_items
        free = np.setdiff1d(np.arange(num_items), taken, assume_unique=True)
        out[case] = rng.choice(free, size=n, replace=False)
    return out


def _cases(data, split: str) -> tuple[np.ndarray, np.ndarray]:
    target = data.target_domain
    rows = data.rows(target, split)
    if rows.y is not None:
        rows = rows.select(rows.y > 0.5)
    keys = np.unique(rows.user.numpy().astype(np.int64) * data.num_items(target) + rows.item.numpy())
    return keys // data.num_items(target), keys % data.num_items(target)


def sampled_candidates(data, split: str, n: int, seed: int, log: Callable[[str], None] = print) -> SampledCandidates:
    """The cases of ``split`` with their negatives: read from beside the prepared data when drawn
    before, else drawn now and saved there (when the prepared data lives on disk)."""
    user, item = _cases(data, split)
    path = Path(data.path) / f"negatives_{split}_n{n}_seed{seed}.npz" if data.path else None
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as stored:
                if np.array_equal(stored["user"], user) and np.array_equal(stored["item"], item):
                    return SampledCandidates(user, item, stored["negatives"])
        except (OSError, ValueError, KeyError):
            pass
        log(f"sampled negatives {path} do not match the prepared data: drawing them again")
    target = data.target_domain
    everything = data.rows(target)
    negatives = draw_negatives(
        user, everything.user.numpy(), everything.item.numpy(), data.num_items(target), n, seed,
        user_label=lambda u: repr(data.user_tokens[u]),
    )
    if path is not None:
        from cdrbench.train.runtime import atomic_save

        try:
            def write(tmp):
                with open(tmp, "wb") as handle:  # a file object: np.savez would append .npz to a name
                    np.savez(handle, user=user, item=item, negatives=negatives)

            atomic_save(path, write)
            log(f"sampled negatives for {split} ({n} per case, seed {seed}) saved to {path}")
        except OSError as error:  # a read-only shared cache: the draw is deterministic anyway
            log(f"could not save sampled negatives to {path} ({error}); they are drawn again next time")
    return SampledCandidates(user, item, negatives)


def evaluate_sampled(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    candidates: SampledCandidates,
    num_items: int,
    ks: Sequence[int],
    map_denominator: str = "min_k_rel",
    chunk_size: Optional[int] = None,
    max_chunk_bytes: int = 1 << 30,
    device=None,
) -> TopNResult:
    """Rank every case's positive among its ``1 + N`` candidates; users are scored in chunks
    (``score_fn(user_ids) -> [C, num_items]``, as for full ranking; results do not depend on the
    chunking)."""
    user, item, negatives = candidates.user, candidates.item, candidates.negatives
    if not user.size:
        raise ConfigError("sampled-negative evaluation: the split has no positive row to rank")
    ks = sorted({int(k) for k in ks})
    chunk_size = chunk_size or derive_chunk_size(num_items, max_chunk_bytes)
    users, starts = np.unique(user, return_index=True)  # cases are sorted by user
    bounds = np.r_[starts, user.size]
    dev = torch.device(device) if device is not None else torch.device("cpu")
    ranks = np.empty(user.size, dtype=np.int64)
    cand_all = torch.from_numpy(np.concatenate([item[:, None], negatives], axis=1))
    for first in range(0, users.size, chunk_size):
        last = min(first + chunk_size, users.size)
        lo, hi = bounds[first], bounds[last]
        with torch.no_grad():
            scores = score_fn(torch.from_numpy(users[first:last]).to(dev))
            if tuple(scores.shape) != (last - first, num_items):
                raise ValueError(f"score_fn returned shape {tuple(scores.shape)}; expected ({last - first}, {num_items})")
            local = torch.from_numpy(np.searchsorted(users[first:last], user[lo:hi])).to(scores.device)
            cand = cand_all[lo:hi].to(scores.device)
            s = scores[local[:, None], cand].double() + 0.0  # + 0.0: -0.0 ties with +0.0
            if bool(torch.isnan(s).any()):
                raise ValueError("score_fn returned NaN scores")
            pos, neg = s[:, :1], s[:, 1:]
            beats = (neg > pos) | ((neg == pos) & (cand[:, 1:] < cand[:, :1]))  # tie: lower id first
            ranks[lo:hi] = beats.sum(dim=1).cpu().numpy()
    width = min(ks[-1], negatives.shape[1] + 1)
    rel = np.zeros((user.size, width), dtype=bool)
    inside = ranks < width
    rel[np.flatnonzero(inside), ranks[inside]] = True
    metrics = metrics_from_rel(rel, np.ones(user.size, dtype=np.int64), ks, map_denominator)
    frame = pd.DataFrame({"user": user, "item": item, "rank": ranks + 1, **metrics})
    return TopNResult(
        per_user=frame, means={k: float(np.mean(v)) for k, v in metrics.items()}, num_users=int(users.size),
        peak_memory_bytes=None, chunk_size=int(chunk_size), ks=tuple(ks), map_denominator=map_denominator,
    )

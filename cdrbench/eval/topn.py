"""Top-N full-ranking evaluation (evaluation spec sections 2-3).

Pure functions: a scoring callable and CSR-style item sets in, a per-user frame
and means out. Nothing here reads the config.

Pipeline, one user chunk at a time (users in ascending id order):

1. ``score_fn(chunk_user_ids) -> [C, I]`` float scores (any device).
2. Copy the scores (``+ 0.0``, which also turns ``-0.0`` into ``+0.0`` so that the
   two zeros tie on every backend), reject NaN, scatter ``-inf`` into
   ``history \\ positives``.
3. Rank with the tie rule (descending score, lower item id first) and keep the
   first ``K_max`` item ids: either a stable descending sort (``ranking="sort"``)
   or the exact ``topk`` path (``ranking="topk"``, default; see :func:`rank_items`).
4. Gather ``rel`` from a boolean positive matrix of the chunk; copy the
   ``[C, K_max]`` boolean rows to the CPU.
5. After the last chunk, compute every metric at every K from cumulative sums
   over ranks, in float64 numpy, once for all users. The ranked ``rel`` rows are
   exact booleans, and the metric arithmetic is row-wise (sequential cumsums and
   elementwise ops only), so results are bit-identical for any chunk size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from cdrbench.eval.ctr import UndefinedMetricError
from cdrbench.eval.names import MAP_DENOMINATORS, METRICS

__all__ = [
    "MAP_DENOMINATORS",
    "RANKINGS",
    "UserItemSets",
    "TopNResult",
    "rank_items",
    "metrics_from_rel",
    "derive_chunk_size",
    "evaluate_topn",
]

RANKINGS = ("topk", "sort")
DEFAULT_MAX_CHUNK_BYTES = 1 << 30  # 1 GiB
#: bytes of working memory per (user, item) cell of a ranking chunk: the scores (4) and their
#: masked copy (4), the tie keys and comparison of boundary-tie rows (4 + 1) and the positive
#: mask (1), rounded up; measured peak 13.3 (Pop: every row tied) and 8-9 (distinct scores)
#: bytes per cell on CPU (scripts/bench_eval.py --memory)
BYTES_PER_CELL = 16


# --------------------------------------------------------------------------- item sets


@dataclass(frozen=True)
class UserItemSets:
    """Per-user sorted, duplicate-free item sets in CSR layout over ALL users.

    ``indices[indptr[u]:indptr[u + 1]]`` are the items of user ``u`` in ascending order.
    """

    indptr: torch.Tensor  # LongTensor[U + 1]
    indices: torch.Tensor  # LongTensor[nnz]

    def __post_init__(self) -> None:
        ip, ix = self.indptr, self.indices
        if not isinstance(ip, torch.Tensor) or not isinstance(ix, torch.Tensor):
            raise ValueError("UserItemSets.indptr and .indices must be torch tensors")
        if ip.dtype != torch.int64 or ix.dtype != torch.int64:
            raise ValueError(
                f"UserItemSets.indptr/indices must be int64, got {ip.dtype}/{ix.dtype}"
            )
        if ip.dim() != 1 or ix.dim() != 1 or ip.numel() < 1:
            raise ValueError("UserItemSets.indptr must be 1-D with U+1 >= 1 entries, indices 1-D")
        if int(ip[0]) != 0 or int(ip[-1]) != ix.numel():
            raise ValueError(
                f"UserItemSets.indptr must start at 0 and end at nnz={ix.numel()}, "
                f"got {int(ip[0])}..{int(ip[-1])}"
            )
        if ip.numel() > 1 and bool((ip[1:] < ip[:-1]).any()):
            raise ValueError("UserItemSets.indptr must be non-decreasing")
        if ix.numel() and int(ix.min()) < 0:
            raise ValueError("UserItemSets.indices must be non-negative item ids")

    # ---- construction
    @classmethod
    def from_pairs(cls, users, items, num_users: int) -> "UserItemSets":
        """Build from (user, item) pairs; sorts per user and removes duplicates."""
        u = torch.as_tensor(users).reshape(-1).to("cpu", torch.int64)
        i = torch.as_tensor(items).reshape(-1).to("cpu", torch.int64)
        if u.numel() != i.numel():
            raise ValueError(f"length mismatch: {u.numel()} users vs {i.numel()} items")
        num_users = int(num_users)
        if num_users < 0:
            raise ValueError(f"num_users must be >= 0, got {num_users}")
        if u.numel():
            if int(u.min()) < 0 or int(u.max()) >= num_users:
                raise ValueError(
                    f"user ids must be in [0, {num_users}), got range "
                    f"[{int(u.min())}, {int(u.max())}]"
                )
            if int(i.min()) < 0:
                raise ValueError(f"item ids must be >= 0, got {int(i.min())}")
            width = int(i.max()) + 1
            keys = torch.unique(u * width + i, sorted=True)
            uu, ii = keys // width, keys % width
        else:
            uu = ii = torch.zeros(0, dtype=torch.int64)
        counts = torch.bincount(uu, minlength=num_users)
        indptr = torch.zeros(num_users + 1, dtype=torch.int64)
        indptr[1:] = torch.cumsum(counts, 0)
        return cls(indptr, ii.contiguous())

    @classmethod
    def empty(cls, num_users: int) -> "UserItemSets":
        return cls(torch.zeros(int(num_users) + 1, dtype=torch.int64),
                   torch.zeros(0, dtype=torch.int64))

    # ---- queries
    @property
    def num_users(self) -> int:
        return self.indptr.numel() - 1

    @property
    def nnz(self) -> int:
        return self.indices.numel()

    def counts(self) -> torch.Tensor:
        """LongTensor[U]: set size of every user."""
        return self.indptr[1:] - self.indptr[:-1]

    def to_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        users = torch.repeat_interleave(
            torch.arange(self.num_users, device=self.indptr.device), self.counts()
        )
        return users, self.indices

    def to(self, device) -> "UserItemSets":
        return UserItemSets(self.indptr.to(device), self.indices.to(device))

    def _check_same_users(self, other: "UserItemSets") -> None:
        if other.num_users != self.num_users:
            raise ValueError(
                f"UserItemSets cover different user counts: {self.num_users} vs {other.num_users}"
            )

    def union(self, other: "UserItemSets") -> "UserItemSets":
        """Per-user union (e.g. test history = train ∪ valid)."""
        self._check_same_users(other)
        u1, i1 = self.to_pairs()
        u2, i2 = other.to_pairs()
        return UserItemSets.from_pairs(
            torch.cat([u1.cpu(), u2.cpu()]), torch.cat([i1.cpu(), i2.cpu()]), self.num_users
        )

    def difference(self, other: "UserItemSets") -> "UserItemSets":
        """Per-user set difference ``self \\ other``."""
        self._check_same_users(other)
        u1, i1 = (t.cpu() for t in self.to_pairs())
        u2, i2 = (t.cpu() for t in other.to_pairs())
        if u1.numel() == 0 or u2.numel() == 0:
            return UserItemSets(self.indptr.cpu().clone(), self.indices.cpu().clone())
        width = int(max(int(i1.max()), int(i2.max()))) + 1
        keep = ~torch.isin(u1 * width + i1, u2 * width + i2)
        return UserItemSets.from_pairs(u1[keep], i1[keep], self.num_users)


def masked_items(positives: UserItemSets, history: UserItemSets) -> UserItemSets:
    """``H_u \\ R_u``: the history items whose scores are set to ``-inf``."""
    return history.to("cpu").difference(positives.to("cpu"))


def _gather_rows(sets: UserItemSets, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(local_row, item) pairs of the given users, no Python loop. ``rows`` on sets' device."""
    starts = sets.indptr[rows]
    lens = sets.indptr[rows + 1] - starts
    total = int(lens.sum())
    dev = rows.device
    local = torch.repeat_interleave(torch.arange(rows.numel(), device=dev), lens,
                                    output_size=total)
    row_off = torch.cumsum(lens, 0) - lens
    pos = torch.arange(total, device=dev) - torch.repeat_interleave(row_off, lens,
                                                                    output_size=total)
    cols = sets.indices[starts[local] + pos]
    return local, cols


# --------------------------------------------------------------------------- ranking


def _rank_sort(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]


def _rank_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    n_items = scores.shape[1]
    if k < n_items:
        # one extra rank: more than k items reach the k-th value v iff the (k+1)-th equals v
        vals, idx = torch.topk(scores, k + 1, dim=1, largest=True, sorted=True)
        bad = vals[:, k] == vals[:, k - 1]
        vals, idx = vals[:, :k], idx[:, :k]
    else:
        vals, idx = torch.topk(scores, k, dim=1, largest=True, sorted=True)
        bad = torch.zeros(scores.shape[0], dtype=torch.bool, device=scores.device)
    v = vals[:, -1:]  # the k-th largest value of every row
    # On rows with a boundary tie, topk chose arbitrarily among the items tied at v.
    if bool(bad.any()):
        b = bad.nonzero().squeeze(1)
        sb, vb, ib = scores[b], v[b], idx[b]
        # items strictly above v are all inside the top k, and come first (sorted=True)
        g = (vals[b] > vb).sum(dim=1, keepdim=True)
        # the lowest-id items tied at v: key = I - id on tied items, 0 elsewhere
        key_dtype = torch.int32 if n_items < 2**31 - 1 else torch.int64
        desc_id = torch.arange(n_items, 0, -1, device=scores.device, dtype=key_dtype)
        key = torch.where(sb == vb, desc_id, torch.zeros((), dtype=key_dtype, device=scores.device))
        tied_ids = torch.topk(key, k, dim=1, largest=True, sorted=True).indices  # ascending id
        j = torch.arange(k, device=scores.device).unsqueeze(0)
        shifted = tied_ids.gather(1, (j - g).clamp(min=0))
        idx[b] = torch.where(j < g, ib, shifted)
    # exact order inside the selected set: id ascending, then stable sort by value desc
    ids_sorted = torch.sort(idx, dim=1).values
    order = torch.sort(scores.gather(1, ids_sorted), dim=1, descending=True, stable=True).indices
    return ids_sorted.gather(1, order)


def rank_items(scores: torch.Tensor, k: int, method: str = "topk") -> torch.Tensor:
    """Item ids of the first ``k`` ranks of every row: score descending, lower id first on ties.

    Equals ``stable descending sort(row)[:k]`` for both methods. ``scores`` must not
    contain NaN; ``-0.0`` and ``+0.0`` must already be normalised if they should tie
    on every backend (:func:`evaluate_topn` does this).

    * ``"sort"``: stable descending sort of the whole row.
    * ``"topk"``: ``torch.topk`` of ``k + 1`` ranks; rows whose ``(k+1)``-th value equals
      the ``k``-th value ``v`` (boundary ties: topk's choice among the items tied at ``v``
      is arbitrary) replace the tied part with the lowest-id items tied at ``v`` (a
      second ``topk`` on the int key ``I - id`` of the tied items, 0 elsewhere); finally
      the k selected ids are put in exact order (sort ids ascending, then a stable
      descending sort of their scores).
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be 2-D [C, I], got shape {tuple(scores.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if k > scores.shape[1]:
        raise ValueError(f"k={k} exceeds the number of items {scores.shape[1]}")
    if method == "sort":
        return _rank_sort(scores, k)
    if method == "topk":
        return _rank_topk(scores, k)
    raise ValueError(f"unknown ranking method {method!r}; expected one of {RANKINGS}")


# --------------------------------------------------------------------------- metrics


def _check_ks(ks: Sequence[int]) -> list[int]:
    if isinstance(ks, (int, np.integer)):
        ks = [int(ks)]
    ks = list(ks)
    if not ks:
        raise ValueError("ks must contain at least one K")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or int(k) <= 0:
            raise ValueError(f"every K in ks must be a positive int, got {k!r} in {ks}")
    return sorted({int(k) for k in ks})


def _check_map_denominator(map_denominator: str) -> None:
    if map_denominator not in MAP_DENOMINATORS:
        raise ValueError(
            f"unknown map_denominator {map_denominator!r}; expected one of {MAP_DENOMINATORS}"
        )


def metric_columns(ks: Sequence[int]) -> list[str]:
    ks = _check_ks(ks)
    return [f"{m}@{k}" for m in METRICS for k in ks]


def metrics_from_rel(rel, n_pos, ks: Sequence[int], map_denominator: str = "min_k_rel"
                     ) -> dict[str, np.ndarray]:
    """Per-user metrics at every K from the ranked relevance rows.

    ``rel``: bool [n, L] (rank j -> item is a positive), with L >= 1; ranks beyond L
    count as non-relevant. ``n_pos``: int [n], |R_u| >= 1. Returns float64 arrays
    keyed ``"recall@K"``, ..., ``"map@K"`` (order of :func:`metric_columns`).
    """
    ks = _check_ks(ks)
    _check_map_denominator(map_denominator)
    rel = np.asarray(rel, dtype=bool)
    n_pos = np.asarray(n_pos, dtype=np.int64)
    if rel.ndim != 2 or n_pos.ndim != 1 or rel.shape[0] != n_pos.shape[0]:
        raise ValueError(f"rel must be [n, L] and n_pos [n]; got {rel.shape} and {n_pos.shape}")
    if n_pos.size and int(n_pos.min()) < 1:
        raise ValueError("every evaluated user needs |R_u| >= 1")
    n = rel.shape[0]
    k_max = ks[-1]
    if rel.shape[1] < k_max:  # fewer items than K: pad with non-relevant ranks
        rel = np.concatenate([rel, np.zeros((n, k_max - rel.shape[1]), dtype=bool)], axis=1)
    rel = rel[:, :k_max]
    relf = rel.astype(np.float64)
    ranks = np.arange(1, k_max + 1, dtype=np.float64)
    disc = 1.0 / np.log2(ranks + 1.0)  # fixed table: identical for every chunking
    idcg_cum = np.cumsum(disc)

    hits = np.cumsum(rel, axis=1, dtype=np.int64)  # h_j, exact
    dcg = np.cumsum(relf * disc, axis=1)  # sequential per row
    ap_num = np.cumsum(relf * (hits / ranks), axis=1)  # sum_j rel_j * h_j / j
    any_hit = rel.any(axis=1)
    first = np.where(any_hit, rel.argmax(axis=1), k_max)  # 0-based rank of first hit

    out: dict[str, np.ndarray] = {}
    per_k: dict[str, list[tuple[int, np.ndarray]]] = {m: [] for m in METRICS}
    n_pos_f = n_pos.astype(np.float64)
    for k in ks:
        hk = hits[:, k - 1]
        hkf = hk.astype(np.float64)
        ideal = np.minimum(n_pos, k)
        per_k["recall"].append((k, hkf / n_pos_f))
        per_k["precision"].append((k, hkf / float(k)))
        per_k["hr"].append((k, (hk > 0).astype(np.float64)))
        per_k["ndcg"].append((k, dcg[:, k - 1] / idcg_cum[ideal - 1] if n else np.zeros(0)))
        mrr = np.zeros(n, dtype=np.float64)
        inside = first < k
        mrr[inside] = 1.0 / (first[inside] + 1.0)
        per_k["mrr"].append((k, mrr))
        num = ap_num[:, k - 1]
        if map_denominator == "min_k_rel":
            den = ideal.astype(np.float64)
        elif map_denominator == "rel":
            den = n_pos_f
        elif map_denominator == "k":
            den = np.full(n, float(k))
        else:  # hits
            den = hkf
        m = np.zeros(n, dtype=np.float64)
        nz = den > 0
        m[nz] = num[nz] / den[nz]
        per_k["map"].append((k, m))
    for metric in METRICS:
        for k, arr in per_k[metric]:
            out[f"{metric}@{k}"] = arr
    return out


# --------------------------------------------------------------------------- evaluator


@dataclass
class TopNResult:
    per_user: pd.DataFrame  # user, n_pos, n_masked, <metric>@K ... (ascending user)
    means: dict[str, float]  # unweighted mean over evaluated users
    num_users: int  # evaluated users (|R_u| >= 1)
    peak_memory_bytes: int | None  # torch.cuda.max_memory_allocated on CUDA, else None
    chunk_size: int = 0
    ks: tuple[int, ...] = ()
    map_denominator: str = "min_k_rel"


def derive_chunk_size(num_items: int, max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES) -> int:
    """C = max(1, floor(max_chunk_bytes / (BYTES_PER_CELL * I))): the users whose ranking fits the
    memory budget (every [C, I] working tensor counted, not only the scores)."""
    if isinstance(max_chunk_bytes, bool) or int(max_chunk_bytes) <= 0:
        raise ValueError(f"max_chunk_bytes must be a positive int, got {max_chunk_bytes!r}")
    if int(num_items) <= 0:
        raise ValueError(f"num_items must be positive, got {num_items!r}")
    return max(1, int(max_chunk_bytes) // (BYTES_PER_CELL * int(num_items)))


def _as_device(device) -> torch.device | None:
    return None if device is None else torch.device(device)


def evaluate_topn(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    users,
    positives: UserItemSets,
    history: UserItemSets | None,
    num_items: int,
    ks: Sequence[int],
    map_denominator: str = "min_k_rel",
    chunk_size: int | None = None,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
    device=None,
    ranking: str = "topk",
    masked: UserItemSets | None = None,
) -> TopNResult:
    """Full-ranking top-N evaluation of ``users`` over all ``num_items`` items.

    * ``score_fn(user_ids: LongTensor[C]) -> FloatTensor[C, num_items]``; the returned
      tensor is copied, never modified.
    * ``users``: ids to consider (duplicates ignored); only those with >= 1 positive
      are evaluated. ``None`` means every user of ``positives``.
    * ``positives``: R_u of the split; ``history``: H_u (train for valid, train ∪ valid
      for test) or ``None``. ``H_u \\ R_u`` is masked with ``-inf``.
    * ``chunk_size``: users per chunk; ``None`` derives it from ``max_chunk_bytes``.
    * ``device``: where ranking runs and where chunk user ids are passed; ``None``
      passes ids on the CPU and ranks on whatever device the scores come back on.
    * ``ranking``: ``"topk"`` (default, exact under ties) or ``"sort"`` (stable sort).
    * ``masked``: ``H_u \\ R_u`` computed once by the caller (see :func:`masked_items`) for
      repeated evaluations of the same split; then ``history`` must be ``None``.
    """
    # ---- validate arguments
    ks = _check_ks(ks)
    _check_map_denominator(map_denominator)
    if ranking not in RANKINGS:
        raise ValueError(f"unknown ranking {ranking!r}; expected one of {RANKINGS}")
    if not callable(score_fn):
        raise ValueError("score_fn must be callable")
    if isinstance(num_items, bool) or int(num_items) <= 0:
        raise ValueError(f"num_items must be a positive int, got {num_items!r}")
    num_items = int(num_items)
    if not isinstance(positives, UserItemSets):
        raise ValueError("positives must be a UserItemSets")
    num_all_users = positives.num_users
    if history is None:
        history = UserItemSets.empty(num_all_users)
    if not isinstance(history, UserItemSets):
        raise ValueError("history must be a UserItemSets or None")
    if history.num_users != num_all_users:
        raise ValueError(
            f"positives cover {num_all_users} users but history covers {history.num_users}"
        )
    for name, s in (("positives", positives), ("history", history)):
        if s.nnz and int(s.indices.max()) >= num_items:
            raise ValueError(
                f"{name} contains item id {int(s.indices.max())} >= num_items={num_items}"
            )
    if chunk_size is None:
        chunk_size = derive_chunk_size(num_items, max_chunk_bytes)
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) \
            or int(chunk_size) <= 0:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    chunk_size = int(chunk_size)
    dev = _as_device(device)

    # ---- users to evaluate, ascending
    if users is None:
        cand = torch.arange(num_all_users, dtype=torch.int64)
    else:
        cand = torch.as_tensor(users).reshape(-1).to("cpu")
        if cand.dtype.is_floating_point or cand.dtype == torch.bool:
            raise ValueError(f"users must be integer ids, got dtype {cand.dtype}")
        cand = cand.to(torch.int64)
        if cand.numel() and (int(cand.min()) < 0 or int(cand.max()) >= num_all_users):
            raise ValueError(
                f"user ids must be in [0, {num_all_users}), got range "
                f"[{int(cand.min())}, {int(cand.max())}]"
            )
        cand = torch.unique(cand, sorted=True)
    pos_cpu = positives.to("cpu")
    if masked is not None:
        if history.nnz:
            raise ValueError("pass either history or masked (= history minus positives), not both")
        if masked.num_users != num_all_users:
            raise ValueError(f"positives cover {num_all_users} users but masked covers {masked.num_users}")
        mask_cpu = masked.to("cpu")
    else:
        mask_cpu = history.to("cpu").difference(pos_cpu)
    n_pos_all = pos_cpu.counts()
    n_masked_all = mask_cpu.counts()
    eval_users = cand[n_pos_all[cand] > 0]
    n_eval = int(eval_users.numel())
    if n_eval == 0:
        raise UndefinedMetricError(
            f"top-N metrics are undefined: none of the {int(cand.numel())} requested users "
            f"has a positive item in this split"
        )

    k_rank = min(ks[-1], num_items)
    rel_all = np.zeros((n_eval, k_rank), dtype=bool)

    peak: int | None = None
    cuda_devs: set[torch.device] = set()
    if dev is not None and dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        cuda_devs.add(dev)

    on_dev: dict[torch.device, tuple[UserItemSets, UserItemSets]] = {}

    def sets_on(d: torch.device) -> tuple[UserItemSets, UserItemSets]:
        if d not in on_dev:
            on_dev[d] = (pos_cpu.to(d), mask_cpu.to(d))
        return on_dev[d]

    ids_device = dev if dev is not None else torch.device("cpu")
    for start in range(0, n_eval, chunk_size):
        chunk_cpu = eval_users[start:start + chunk_size]
        c = chunk_cpu.numel()
        scores = score_fn(chunk_cpu.to(ids_device))
        if not isinstance(scores, torch.Tensor):
            raise ValueError(f"score_fn must return a torch.Tensor, got {type(scores).__name__}")
        if tuple(scores.shape) != (c, num_items):
            raise ValueError(
                f"score_fn returned shape {tuple(scores.shape)}; expected ({c}, {num_items}) "
                f"= (chunk users, num_items)"
            )
        if not scores.dtype.is_floating_point:
            raise ValueError(f"score_fn must return floating scores, got dtype {scores.dtype}")
        d = dev if dev is not None else scores.device
        if d.type == "cuda" and d not in cuda_devs:
            torch.cuda.reset_peak_memory_stats(d)
            cuda_devs.add(d)
        with torch.no_grad():
            # copy (never modify the caller's tensor) and turn -0.0 into +0.0
            scores = scores.detach().to(d) + 0.0
            # cheap NaN screen (a sum); the exact check runs only if the sum is not finite
            if not bool(torch.isfinite(scores.sum())) and bool(torch.isnan(scores).any()):
                raise ValueError("score_fn returned NaN scores")
            pos_d, mask_d = sets_on(d)
            rows = chunk_cpu.to(d)
            mr, mc = _gather_rows(mask_d, rows)
            scores[mr, mc] = float("-inf")
            top = rank_items(scores, k_rank, ranking)
            del scores
            pr, pc = _gather_rows(pos_d, rows)
            posmat = torch.zeros((c, num_items), dtype=torch.bool, device=d)
            posmat[pr, pc] = True
            rel = posmat.gather(1, top)
            del posmat, top
            rel_all[start:start + c] = rel.cpu().numpy()
    for d in cuda_devs:
        m = int(torch.cuda.max_memory_allocated(d))
        peak = m if peak is None else max(peak, m)

    # ---- per-user rows and means, one fixed order
    n_pos_eval = n_pos_all[eval_users].numpy()
    metrics = metrics_from_rel(rel_all, n_pos_eval, ks, map_denominator)
    frame = {
        "user": eval_users.numpy().astype(np.int64),
        "n_pos": n_pos_eval.astype(np.int64),
        "n_masked": n_masked_all[eval_users].numpy().astype(np.int64),
    }
    frame.update(metrics)
    per_user = pd.DataFrame(frame)
    means = {col: float(np.mean(arr)) for col, arr in metrics.items()}
    return TopNResult(
        per_user=per_user,
        means=means,
        num_users=n_eval,
        peak_memory_bytes=peak,
        chunk_size=chunk_size,
        ks=tuple(ks),
        map_denominator=map_denominator,
    )

"""Target-domain splits. Each function returns a split code per row: 0 train, 1 valid, 2 test.

All functions take rows in the prepared time order (see ``prepare.time_order``) and user codes;
they are deterministic given their ``seed``.
"""

from __future__ import annotations

import numpy as np

TRAIN, VALID, TEST = 0, 1, 2
SPLIT_NAMES = {TRAIN: "train", VALID: "valid", TEST: "test"}
SPLIT_CODES = {name: code for code, name in SPLIT_NAMES.items()}


def _rank_within_user(users: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of each row within its user's rows taken in ``order``, and that user's row count.

    ``order`` is a permutation of the rows; the position counts from 0 in that order.
    """
    users_in_order = users[order]
    # stable grouping keeps ``order`` within each user
    grouped = order[np.argsort(users_in_order, kind="stable")]
    grouped_users = users[grouped]
    starts = np.flatnonzero(np.r_[True, grouped_users[1:] != grouped_users[:-1]])
    sizes = np.diff(np.r_[starts, grouped.size])
    position = np.arange(grouped.size) - np.repeat(starts, sizes)
    rank = np.empty(users.size, dtype=np.int64)
    count = np.empty(users.size, dtype=np.int64)
    rank[grouped] = position
    count[grouped] = np.repeat(sizes, sizes)
    return rank, count


def leave_last_two(users: np.ndarray) -> np.ndarray:
    """BiGNAS/BIAO protocol on time-ordered rows: per user the last row is test, the one before
    it valid, the rest train. Users need at least two rows (checked by the caller)."""
    rank, count = _rank_within_user(users, np.arange(users.size))
    from_end = count - 1 - rank
    split = np.full(users.size, TRAIN, dtype=np.int8)
    split[from_end == 1] = VALID
    split[from_end == 0] = TEST
    return split


def recbole_counts(n: np.ndarray, ratios: list[float]) -> np.ndarray:
    """Per-group part sizes of RecBole's ``split_by_ratio`` (``_calcu_split_ids``), vectorised.

    ``cnt[i] = floor(ratio_i * n)`` for the later parts, the first part takes the rest; then,
    from the last part backwards while the first part has more than one row, a part whose
    ``ratio * n`` lies strictly between 0 and 1 takes one row from the first part.
    """
    ratios = np.asarray(ratios, dtype=float)
    ratios = ratios / ratios.sum()
    n = np.asarray(n, dtype=np.int64)
    cnt = np.floor(ratios[None, :] * n[:, None]).astype(np.int64)
    cnt[:, 0] = n - cnt[:, 1:].sum(axis=1)
    for i in range(1, ratios.size):
        exact = ratios[-i] * n
        take = (cnt[:, 0] > 1) & (exact > 0) & (exact < 1)
        cnt[take, -i] += 1
        cnt[take, 0] -= 1
    return cnt


def ratio_split(users: np.ndarray, ratios: list[float], seed: int) -> np.ndarray:
    """Per-user random split with RecBole's rounding (HAGO: 80/10/10, ``RS`` + ``group_by user``).

    All rows are shuffled with ``seed``; each user's rows keep that shuffled order and go to train,
    then valid, then test.
    """
    if len(ratios) != 3:
        raise ValueError(f"split.ratios needs three shares (train, valid, test), got {list(ratios)}")
    order = np.random.default_rng(seed).permutation(users.size)
    rank, count = _rank_within_user(users, order)
    sizes = recbole_counts(count, ratios)
    split = np.full(users.size, TRAIN, dtype=np.int8)
    split[rank >= sizes[:, 0]] = VALID
    split[rank >= sizes[:, 0] + sizes[:, 1]] = TEST
    return split


def holdout_counts(n: np.ndarray, test: float, valid_of_train: float) -> tuple[np.ndarray, np.ndarray]:
    """PCRec rounding: ``n_test = max(1, round_half_up(test * n))``,
    ``n_valid = round_half_up(valid_of_train * (n - n_test))``."""
    n = np.asarray(n, dtype=np.int64)
    n_test = np.maximum(1, np.floor(test * n + 0.5).astype(np.int64))
    n_test = np.minimum(n_test, n)
    n_valid = np.floor(valid_of_train * (n - n_test) + 0.5).astype(np.int64)
    return n_test, n_valid


def holdout_split(
    users: np.ndarray, test: float, valid_of_train: float, seed: int, group_by: str = "user"
) -> np.ndarray:
    """PCRec protocol: a random ``test`` share is held out, then ``valid_of_train`` of the rest is
    validation. ``group_by=user`` applies the counts per user, ``none`` to all rows at once.
    Shuffled rows go to train first, then valid, then test."""
    order = np.random.default_rng(seed).permutation(users.size)
    if group_by == "user":
        rank, count = _rank_within_user(users, order)
    elif group_by == "none":
        rank = np.empty(users.size, dtype=np.int64)
        rank[order] = np.arange(users.size)
        count = np.full(users.size, users.size, dtype=np.int64)
    else:
        raise ValueError(f"data.split.group_by must be 'user' or 'none', got {group_by!r}")
    n_test, n_valid = holdout_counts(count, test, valid_of_train)
    n_train = count - n_test - n_valid
    split = np.full(users.size, TRAIN, dtype=np.int8)
    split[rank >= n_train] = VALID
    split[rank >= n_train + n_valid] = TEST
    return split


def temporal_split(num_rows: int, ratios: list[float]) -> np.ndarray:
    """Global temporal split of time-ordered rows: the first share is train, then valid, then test."""
    if len(ratios) != 3:
        raise ValueError(f"split.ratios needs three shares (train, valid, test), got {list(ratios)}")
    shares = np.asarray(ratios, dtype=float) / float(sum(ratios))
    n_train = int(np.floor(shares[0] * num_rows))
    n_valid = int(np.floor(shares[1] * num_rows))
    split = np.full(num_rows, TRAIN, dtype=np.int8)
    split[n_train : n_train + n_valid] = VALID
    split[n_train + n_valid :] = TEST
    return split

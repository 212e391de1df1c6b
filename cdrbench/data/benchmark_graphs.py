"""Large seeded cross-domain data for speed and memory benchmarks, built in seconds.

:class:`~cdrbench.data.sources.synthetic.SyntheticDomain` scores every user against every item
(O(users x items)); at benchmark scale (10^5 nodes, 10^6 rows) that is out of reach, so the
benchmarks (``scripts/bench_scaling.py``, ``scripts/gpu_check.py``) build their graphs here, in
O(rows): users and items fall into ``num_clusters`` taste clusters; a row picks, with
probability ``in_cluster``, an item of its user's cluster, else any item, by Zipf popularity in
both cases (so the graph has a popularity skew and structure a recommender can learn). Click
labels are 1 with probability 0.7 for in-cluster rows and 0.3 otherwise. The target domain is
split per user 80/10/10 (RecBole rounding); source domains are training data.

Not a data set: used only by benchmarks and tests, never as a fallback for missing files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cdrbench.data.dataset import CrossDomainData, Interactions
from cdrbench.data.splits import TRAIN, ratio_split


def _zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return rng.permutation(weights / weights.sum())


def clustered_rows(num_users: int, num_items: int, num_rows: int, rng: np.random.Generator,
                   user_cluster: np.ndarray, num_clusters: int, in_cluster: float = 0.8,
                   zipf: float = 0.8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``num_rows`` distinct (user, item) pairs (fewer only if the domain saturates) and a click
    label per row."""
    item_cluster = rng.integers(0, num_clusters, size=num_items)
    popularity = _zipf_weights(num_items, zipf, rng)
    activity = _zipf_weights(num_users, 0.5, rng)
    # one CDF per cluster, laid end to end: cluster c's items cover [c, c + 1)
    by_cluster = np.lexsort((np.arange(num_items), item_cluster))
    weights = popularity[by_cluster]
    cluster_sorted = item_cluster[by_cluster]
    totals = np.bincount(cluster_sorted, weights=weights, minlength=num_clusters)
    within = np.cumsum(weights) - np.concatenate([[0.0], np.cumsum(totals)])[cluster_sorted]
    cdf = cluster_sorted + within / np.maximum(totals[cluster_sorted], 1e-300)
    global_cdf = np.cumsum(popularity)
    users_out, items_out, y_out = [], [], []
    have, seen = 0, np.empty(0, dtype=np.int64)
    for _ in range(20):
        if have >= num_rows:
            break
        n = int((num_rows - have) * 1.2) + 16
        users = rng.choice(num_users, size=n, p=activity)
        local = (rng.random(n) < in_cluster) & (totals[user_cluster[users]] > 0)
        items = np.minimum(np.searchsorted(global_cdf, rng.random(n) * global_cdf[-1]), num_items - 1)
        position = np.searchsorted(cdf, user_cluster[users[local]] + rng.random(int(local.sum())))
        items[local] = by_cluster[np.minimum(position, num_items - 1)]
        keys = users.astype(np.int64) * num_items + items
        keys, first = np.unique(keys, return_index=True)
        fresh = ~np.isin(keys, seen, assume_unique=True)
        take = np.sort(first[fresh])[: num_rows - have]
        if len(take) == 0:
            break  # the domain is saturated
        seen = np.union1d(seen, keys[fresh])
        users_out.append(users[take])
        items_out.append(items[take])
        y_out.append((rng.random(len(take)) < np.where(local[take], 0.7, 0.3)).astype(np.float32))
        have += len(take)
    return np.concatenate(users_out), np.concatenate(items_out), np.concatenate(y_out)


def clustered_cross_domain(num_users: int, domains: dict[str, tuple[int, int]], target: str,
                           seed: int = 0, num_clusters: int = 50, in_cluster: float = 0.8,
                           name: str = "benchmark") -> CrossDomainData:
    """``domains`` maps a domain key to ``(num_items, num_rows)``; every domain but ``target``
    is a source (in the given order). Users are shared across domains."""
    rng = np.random.default_rng(seed)
    user_cluster = rng.integers(0, num_clusters, size=num_users)
    interactions, item_tokens = {}, {}
    for domain, (num_items, num_rows) in domains.items():
        users, items, y = clustered_rows(num_users, num_items, num_rows, rng, user_cluster, num_clusters, in_cluster)
        if domain == target:
            split = ratio_split(users, [0.8, 0.1, 0.1], seed)
        else:
            split = np.full(len(users), TRAIN, dtype=np.int8)
        frame = pd.DataFrame({"user": users, "item": items, "rating": np.full(len(users), np.nan),
                              "ts": np.full(len(users), np.nan), "split": split, "y": y})
        interactions[domain] = Interactions.from_frame(frame)
        item_tokens[domain] = np.array([f"{domain}:{i}" for i in range(num_items)], dtype=object)
    return CrossDomainData(
        name=name, source_domains=[d for d in domains if d != target], target_domain=target,
        user_tokens=np.array([f"u{u}" for u in range(num_users)], dtype=object),
        item_tokens=item_tokens, interactions=interactions,
        manifest={"generator": "cdrbench.data.benchmark_graphs.clustered_cross_domain", "seed": seed},
    )

"""Seeded synthetic cross-domain interactions (the embedded default data set).

Every domain of one synthetic set is generated from the same ``seed``: users share latent
factors across domains, items have domain-specific factors. A user picks items with probability
proportional to ``exp(<user, item> / temperature)`` (sampled without replacement with the
Gumbel-top-k trick); a ``noise`` share of a domain's interactions is replaced by uniformly random
items with uniformly random ratings: pure-noise behaviour that a cross-domain method should learn
to down-weight. Ratings 1-5 follow the affinity's quantiles within the domain; timestamps are
Unix seconds spread over ``span_days``, in increasing order of a user's picks (so the most
preferred items are *not* systematically the latest).

Nothing here stands in for real data: it is used only when ``data=synthetic`` is chosen.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cdrbench.data.sources.base import RawFile, Reader, tidy_frame

_START_TS = 1_500_000_000  # 2017-07-14, an arbitrary fixed origin keeps runs reproducible
_USER_CHUNK = 1024


class SyntheticDomain(Reader):
    """One domain of a seeded synthetic cross-domain set.

    Args:
        num_users: size of the user pool shared by all domains of the set.
        num_items: items of this domain.
        interactions_per_user: mean number of interactions of a present user (Poisson, >= 3).
        user_share: fraction of the user pool present in this domain (a seeded subset; domains
            with share < 1 overlap partially).
        dim: latent dimension.
        temperature: lower = more deterministic preferences.
        noise: fraction of interactions replaced by uniformly random (item, rating) pairs.
        domain_seed: distinguishes the item factors of domains of the same set.
        seed: seed of the whole set (user factors, membership); same seed -> same users.
        span_days: the time range of the timestamps.
    """

    def __init__(
        self,
        num_users: int = 300,
        num_items: int = 200,
        interactions_per_user: float = 20.0,
        user_share: float = 1.0,
        dim: int = 8,
        temperature: float = 0.5,
        noise: float = 0.0,
        domain_seed: int = 0,
        seed: int = 0,
        span_days: int = 365,
    ):
        if num_users < 2 or num_items < 2:
            raise ValueError("synthetic data needs at least 2 users and 2 items")
        if not 0.0 <= noise <= 1.0:
            raise ValueError(f"synthetic noise must be in [0, 1], got {noise}")
        if not 0.0 < user_share <= 1.0:
            raise ValueError(f"synthetic user_share must be in (0, 1], got {user_share}")
        self.num_users = int(num_users)
        self.num_items = int(num_items)
        self.interactions_per_user = float(interactions_per_user)
        self.user_share = float(user_share)
        self.dim = int(dim)
        self.temperature = float(temperature)
        self.noise = float(noise)
        self.domain_seed = int(domain_seed)
        self.seed = int(seed)
        self.span_days = int(span_days)

    def raw_files(self, root: Path) -> list[RawFile]:
        return []

    def read(self, root: Path) -> pd.DataFrame:
        shared = np.random.default_rng(self.seed)
        user_factors = shared.normal(size=(self.num_users, self.dim))
        local = np.random.default_rng([self.seed, self.domain_seed + 1])
        item_factors = local.normal(size=(self.num_items, self.dim))
        present = np.sort(
            local.choice(self.num_users, size=max(2, round(self.user_share * self.num_users)), replace=False)
        )

        counts = np.minimum(np.maximum(local.poisson(self.interactions_per_user, size=present.size), 3), self.num_items)
        rows_user, rows_item, rows_aff = [], [], []
        # users in chunks: memory stays O(chunk x items) however large the set
        for start in range(0, present.size, _USER_CHUNK):
            chunk = present[start : start + _USER_CHUNK]
            affinity = user_factors[chunk] @ item_factors.T / np.sqrt(self.dim)
            keys = affinity / self.temperature + local.gumbel(size=affinity.shape)
            order = np.argsort(-keys, axis=1, kind="stable")
            for pos, (user, count) in enumerate(zip(chunk, counts[start : start + _USER_CHUNK])):
                picks = order[pos, :count]
                rows_user.append(np.full(count, user))
                rows_item.append(picks)
                rows_aff.append(affinity[pos, picks])
        users = np.concatenate(rows_user)
        items = np.concatenate(rows_item)
        aff = np.concatenate(rows_aff)

        # ratings from the domain-wide affinity quantiles: top fifth -> 5, bottom fifth -> 1
        edges = np.quantile(aff, [0.2, 0.4, 0.6, 0.8])
        ratings = 1.0 + np.searchsorted(edges, aff).astype(float)

        noisy = local.random(users.size) < self.noise
        items[noisy] = local.integers(0, self.num_items, size=int(noisy.sum()))
        ratings[noisy] = local.integers(1, 6, size=int(noisy.sum())).astype(float)

        # timestamps: independent of preference order, day resolution plus seconds
        ts = _START_TS + local.integers(0, self.span_days * 86400, size=users.size)

        frame = tidy_frame(
            [f"u{u}" for u in users], [f"{self.domain}:i{i}" for i in items], ratings, ts, self.domain
        )
        return frame

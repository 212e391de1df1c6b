"""``CrossDomainData``: the prepared cross-domain data set every method consumes.

One shared user id space ``[0, U)``; per-domain item id spaces ``[0, I_d)``. Each domain holds its
interactions as tensors with a split code (0 train, 1 valid, 2 test; source domains are all
train). Graphs are built from **training rows only**: no method can put a valid or test
interaction into a graph through this class.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from cdrbench.data.graph import Graph, bipartite_edge_index
from cdrbench.data.splits import SPLIT_CODES, SPLIT_NAMES, TRAIN

MANIFEST = "manifest.json"


@dataclass
class Interactions:
    """Rows of one domain (or a subset of them) as aligned 1-D tensors."""

    user: Tensor  # int64
    item: Tensor  # int64
    rating: Tensor  # float32, NaN where the source has no rating
    ts: Tensor  # float64 Unix seconds, NaN where the source has no time
    split: Tensor  # int8: 0 train, 1 valid, 2 test
    y: Optional[Tensor] = None  # float32 click label in {0, 1}; None for implicit data

    def __len__(self) -> int:
        return int(self.user.numel())

    def select(self, mask: Tensor) -> "Interactions":
        return Interactions(
            **{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[mask]) for f in fields(self)}
        )

    def to_frame(self) -> pd.DataFrame:
        data = {
            "user": self.user.numpy(),
            "item": self.item.numpy(),
            "rating": self.rating.numpy(),
            "ts": self.ts.numpy(),
            "split": self.split.numpy(),
        }
        if self.y is not None:
            data["y"] = self.y.numpy().astype(np.int8)
        return pd.DataFrame(data)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> "Interactions":
        return cls(
            user=torch.as_tensor(frame["user"].to_numpy(np.int64, copy=True)),
            item=torch.as_tensor(frame["item"].to_numpy(np.int64, copy=True)),
            rating=torch.as_tensor(frame["rating"].to_numpy(np.float32, copy=True)),
            ts=torch.as_tensor(frame["ts"].to_numpy(np.float64, copy=True)),
            split=torch.as_tensor(frame["split"].to_numpy(np.int8, copy=True)),
            y=torch.as_tensor(frame["y"].to_numpy(np.float32, copy=True)) if "y" in frame else None,
        )


class CrossDomainData:
    """Prepared interactions of several domains sharing one user space.

    Args:
        name: data set key.
        source_domains: source domain keys, in config order.
        target_domain: the target domain key (the one that is split and evaluated).
        user_tokens: raw user token of every user id.
        item_tokens: per domain, raw item token of every item id.
        interactions: per domain, its rows.
        manifest: provenance (raw file hashes, options, cache key); saved with the data.
    """

    def __init__(
        self,
        name: str,
        source_domains: list[str],
        target_domain: str,
        user_tokens: np.ndarray,
        item_tokens: dict[str, np.ndarray],
        interactions: dict[str, Interactions],
        manifest: Optional[dict] = None,
        path: Optional[Path] = None,
    ):
        self.name = name
        self.source_domains = list(source_domains)
        self.target_domain = target_domain
        self.user_tokens = np.asarray(user_tokens, dtype=object)
        self.item_tokens = {d: np.asarray(t, dtype=object) for d, t in item_tokens.items()}
        self.interactions = interactions
        self.manifest = manifest or {}
        self.path = path
        missing = [d for d in self.domains if d not in interactions or d not in item_tokens]
        if missing:
            raise ValueError(f"CrossDomainData lacks domains {missing}")

    # ------------------------------------------------------------------ sizes
    @property
    def domains(self) -> list[str]:
        """Source domains in order, then the target domain."""
        return [*self.source_domains, self.target_domain]

    @property
    def num_users(self) -> int:
        return len(self.user_tokens)

    def num_items(self, domain: str) -> int:
        return len(self.item_tokens[domain])

    @property
    def has_labels(self) -> bool:
        return self.interactions[self.target_domain].y is not None

    def target_only(self) -> "CrossDomainData":
        """A view without the source domains (same user ids, same target items and split)."""
        target = self.target_domain
        return CrossDomainData(
            name=self.name,
            source_domains=[],
            target_domain=target,
            user_tokens=self.user_tokens,
            item_tokens={target: self.item_tokens[target]},
            interactions={target: self.interactions[target]},
            manifest=self.manifest,
            path=self.path,
        )

    # ------------------------------------------------------------------ rows
    def rows(self, domain: str, split: str | Iterable[str] = ("train", "valid", "test")) -> Interactions:
        """Rows of ``domain`` in the given split(s) (``train``, ``valid``, ``test``)."""
        names = [split] if isinstance(split, str) else list(split)
        unknown = [s for s in names if s not in SPLIT_CODES]
        if unknown:
            raise ValueError(f"unknown split {unknown}; use train, valid or test")
        rows = self.interactions[domain]
        mask = torch.zeros(len(rows), dtype=torch.bool)
        for name in names:
            mask |= rows.split == SPLIT_CODES[name]
        return rows.select(mask)

    def train(self, domain: str) -> Interactions:
        return self.rows(domain, "train")

    # ------------------------------------------------------------------ graphs
    def bipartite_graph(self, domain: str) -> Graph:
        """Users ``[0, U)`` + items of ``domain`` ``[U, U + I_d)``, training rows only."""
        rows = self.train(domain)
        edge_index = bipartite_edge_index(rows.user, rows.item, self.num_users)
        return Graph.from_edge_index(edge_index, self.num_users + self.num_items(domain), self.num_users)

    def item_offsets(self, domains: Optional[list[str]] = None) -> dict[str, int]:
        """Offset of each domain's item block in a unified graph's item space."""
        offsets, start = {}, 0
        for domain in domains or self.domains:
            offsets[domain] = start
            start += self.num_items(domain)
        return offsets

    def unified_graph(self, domains: Optional[list[str]] = None) -> tuple[Graph, dict[str, int]]:
        """One graph with the shared user block and the item blocks of ``domains`` (default: all,
        sources first) stacked after it; training rows only. Returns the graph and each domain's
        item offset (node of item ``i`` of domain ``d`` = ``U + offset[d] + i``)."""
        domains = domains or self.domains
        offsets = self.item_offsets(domains)
        parts = []
        for domain in domains:
            rows = self.train(domain)
            parts.append(bipartite_edge_index(rows.user, rows.item, self.num_users, offsets[domain]))
        edge_index = torch.cat(parts, dim=1)
        num_nodes = self.num_users + sum(self.num_items(d) for d in domains)
        return Graph.from_edge_index(edge_index, num_nodes, self.num_users), offsets

    # ------------------------------------------------------------------ statistics
    def statistics(self) -> pd.DataFrame:
        """Per-domain table in the style of the papers' data-set tables, plus an ``all`` row.

        ``users`` counts users with at least one row in the domain (all users for ``all``);
        ``overlap_users`` those also present in another domain (in every domain for ``all``);
        ``items`` is the size of the domain's item space (items seen only in valid/test count).
        """
        domain_users = {d: set(self.interactions[d].user.unique().tolist()) for d in self.domains}
        records = []
        for domain in self.domains:
            rows = self.interactions[domain]
            users = domain_users[domain]
            others = set().union(*(domain_users[o] for o in self.domains if o != domain))
            n_items = self.num_items(domain)
            counts = {name: int((rows.split == code).sum()) for code, name in SPLIT_NAMES.items()}
            record = {
                "domain": domain,
                "role": "target" if domain == self.target_domain else "source",
                "users": len(users),
                "items": n_items,
                "interactions": len(rows),
                "density": len(rows) / max(1, len(users) * n_items),
                "overlap_users": len(users & others),
                "train": counts["train"],
                "valid": counts["valid"],
                "test": counts["test"],
            }
            if rows.y is not None:
                record["positive_share"] = float(rows.y.mean()) if len(rows) else float("nan")
            records.append(record)
        total = {
            "domain": "all",
            "role": "",
            "users": self.num_users,
            "items": sum(r["items"] for r in records),
            "interactions": sum(r["interactions"] for r in records),
            "overlap_users": len(set.intersection(*domain_users.values())),
            **{name: sum(r[name] for r in records) for name in ("train", "valid", "test")},
        }
        total["density"] = total["interactions"] / max(1, total["users"] * total["items"])
        records.append(total)
        return pd.DataFrame.from_records(records).set_index("domain")

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path) -> None:
        """Write the data set into ``path`` (an empty directory); the manifest goes last."""
        path = Path(path)
        pd.DataFrame({"user": self.user_tokens}).to_csv(path / "users.tsv", sep="\t", index_label="id")
        for domain in self.domains:
            pd.DataFrame({"item": self.item_tokens[domain]}).to_csv(
                path / f"items_{domain}.tsv", sep="\t", index_label="id"
            )
            self.interactions[domain].to_frame().to_parquet(path / f"{domain}.parquet", index=False)
        manifest = dict(self.manifest)
        manifest.update(
            {
                "name": self.name,
                "source_domains": self.source_domains,
                "target_domain": self.target_domain,
                "num_users": self.num_users,
                "num_items": {d: self.num_items(d) for d in self.domains},
            }
        )
        (path / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: Path) -> "CrossDomainData":
        path = Path(path)
        manifest = json.loads((path / MANIFEST).read_text())
        domains = [*manifest["source_domains"], manifest["target_domain"]]
        users = _read_tokens(path / "users.tsv", "user")
        items = {d: _read_tokens(path / f"items_{d}.tsv", "item") for d in domains}
        interactions = {d: Interactions.from_frame(pd.read_parquet(path / f"{d}.parquet")) for d in domains}
        return cls(
            name=manifest["name"],
            source_domains=manifest["source_domains"],
            target_domain=manifest["target_domain"],
            user_tokens=users,
            item_tokens=items,
            interactions=interactions,
            manifest=manifest,
            path=path,
        )


def _read_tokens(path: Path, column: str) -> np.ndarray:
    frame = pd.read_csv(path, sep="\t", dtype={column: str}, keep_default_na=False)
    if not np.array_equal(frame["id"].to_numpy(), np.arange(len(frame))):
        raise ValueError(f"{path}: ids are not 0..n-1 in order")
    return frame[column].to_numpy(dtype=object)

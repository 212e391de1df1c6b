"""Raw tidy tables -> :class:`CrossDomainData`, with a content-addressed cache.

The steps run in this order, each a named function below (``data.*`` keys in brackets):

1. ``drop_missing_ids``      rows without a user or item token are dropped
   ``check_ratings``         every rating inside [rating_range]; ratings present where
                             min_rating / label_threshold need them (file and line named)
2. ``deduplicate``           repeated (user, item) pairs per domain          [dedup]
3. ``filter_min_rating``     keep rating >= threshold (implicit positives)    [min_rating]
   ``resolve_item_tokens``   item tokens prefixed with their domain, or checked for
                             tokens shared by two domains              [namespace_item_tokens]
4. ``kcore_filter``          per-domain iterative k-core, then one-pass filters (or on the
                             source domains concatenated, ``source_filter=merged``)
                                                                [domains.<d>.kcore, kcore_mode,
                                                                 min_user/item_interactions,
                                                                 source_filter]
5. ``select_users``          all users, or users common to every domain        [users]
   ``drop_sparse_target_users``  users with too few distinct target items leave every domain
                                                                [min_target_interactions]
6. ``time_order``            sources then target, each in file order; stable sort on time, ties
                             keep that order (BiGNAS/BIAO)                      [sort]
7. ``click_labels``          y = rating > threshold                           [label_threshold]
8. ``split_target``          target split codes; source rows are train; all rows of one
                             (user, item) pair land in one split               [split.*]
   ``leakage_cut``           leave_last_two: drop source rows at or after the user's
                             second-to-last target time                        [split.leakage_cut]
9. ``assign_ids``            users (shared) and items (per domain) numbered by first
                             appearance in the time order; maps saved as files

Every step's row counts and what it found (duplicates, rating ranges, reader warnings) go into
the manifest (``steps``, ``findings``); ``stage=prepare`` prints them (:func:`preparation_report`).

The cache key hashes the raw files' sha256, every option above, the readers' parameters and the
source code of this module, ``splits.py`` and the readers' modules: a changed file, option or
preparation code never reuses a stale cache. The cache directory is written under a temporary
name and renamed into place only when complete; an entry with a file missing or unreadable is
rebuilt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd

from cdrbench import validate as validate_module
from cdrbench.data import dataset as dataset_module
from cdrbench.data import splits as splits_module
from cdrbench.data.dataset import MANIFEST, CrossDomainData, Interactions
from cdrbench.data.download import ensure_files, missing_file_error
from cdrbench.data.sources.base import LOCATION_COLUMNS, Reader
from cdrbench.data.splits import SPLIT_CODES, SPLIT_NAMES, TRAIN, VALID
from cdrbench.errors import ConfigError, DataFileError, DataFormatError
from cdrbench.train.runtime import file_mode
from cdrbench.validate import (  # noqa: F401 (re-exported: the option names live with the checks)
    DEDUP_POLICIES, KCORE_MODES, SORT_POLICIES, SOURCE_FILTERS, SPLIT_KINDS, USER_POLICIES, resolve_path,
)

Log = Callable[[str], None]


# ---------------------------------------------------------------------------- steps
def drop_missing_ids(frame: pd.DataFrame) -> pd.DataFrame:
    bad = frame["user"].isna() | frame["item"].isna() | (frame["user"] == "") | (frame["item"] == "")
    return frame[~bad]


def where(frame: pd.DataFrame, mask: np.ndarray) -> str:
    """``<file> line N`` of the first row of ``mask`` ("" when the reader recorded no lines)."""
    index = np.flatnonzero(np.asarray(mask))
    if not index.size or not set(LOCATION_COLUMNS) <= set(frame.columns):
        return ""
    row = frame.iloc[int(index[0])]
    return f"{row['file']} line {int(row['line'])}"


def check_ratings(frame: pd.DataFrame, domain: str, cfg) -> None:
    """Ratings must lie in ``data.rating_range`` and exist where an option needs them."""
    rating = frame["rating"].to_numpy(dtype=float)
    missing = np.isnan(rating)
    for key in ("min_rating", "label_threshold"):
        value = getattr(cfg, key)
        if value is not None and missing.any():
            raise ConfigError(
                f"data.{key}={value} needs a rating on every row, but domain '{domain}' has {int(missing.sum())} "
                f"of {len(frame)} rows without one" + (f" (e.g. {where(frame, missing)})" if where(frame, missing) else "")
                + "; implicit data (no ratings) needs "
                f"data.{key}=null"
            )
    if cfg.rating_range is not None:
        low, high = cfg.rating_range
        outside = ~missing & ((rating < low) | (rating > high))
        if outside.any():
            first = rating[outside][0]
            raise DataFormatError(
                f"domain '{domain}': {int(outside.sum())} rows have a rating outside data.rating_range="
                f"[{low:g}, {high:g}], e.g. {first:g}" + (f" at {where(frame, outside)}" if where(frame, outside) else "")
            )


def _time_then_file_order(frame: pd.DataFrame) -> np.ndarray:
    return np.lexsort((frame["file_pos"].to_numpy(), frame["ts"].to_numpy()))


def duplicate_rows(frame: pd.DataFrame) -> tuple[int, int]:
    """(rows that repeat an earlier (user, item) pair, pairs that occur more than once)."""
    repeated = frame.duplicated(["user", "item"], keep=False)
    extra = int(frame.duplicated(["user", "item"]).sum())
    pairs = int(frame.loc[repeated, ["user", "item"]].drop_duplicates().shape[0]) if extra else 0
    return extra, pairs


def deduplicate(frame: pd.DataFrame, policy: str) -> pd.DataFrame:
    """``keep``: every row stays; ``first``/``last``: one row per (user, item) pair, the earliest /
    latest by time (file order breaks ties and orders rows without a time)."""
    if policy == "keep":
        return frame
    ordered = frame.iloc[_time_then_file_order(frame)]
    kept = ordered.drop_duplicates(["user", "item"], keep=policy)
    return kept.sort_values("file_pos", kind="stable")


def filter_min_rating(frame: pd.DataFrame, min_rating: Optional[float], domain: str) -> pd.DataFrame:
    if min_rating is None:
        return frame
    if frame["rating"].isna().any():
        raise ConfigError(
            f"data.min_rating={min_rating} needs ratings, but domain '{domain}' has "
            f"{int(frame['rating'].isna().sum())} rows without one"
        )
    return frame[frame["rating"] >= min_rating]


def _codes(values: pd.Series) -> np.ndarray:
    return pd.factorize(values, sort=False)[0]


def kcore_filter(frame: pd.DataFrame, k: int, mode: str = "bipartite") -> pd.DataFrame:
    """Keep rows whose user and item both have >= ``k`` rows, iterated to a fixed point
    (``bipartite``), or one pass keeping users with >= ``k`` rows (``user_only``)."""
    if k <= 0 or frame.empty:
        return frame
    users, items = _codes(frame["user"]), _codes(frame["item"])
    keep = np.ones(len(frame), dtype=bool)
    while True:
        user_deg = np.bincount(users[keep], minlength=users.max() + 1)
        ok = user_deg[users] >= k
        if mode == "bipartite":
            item_deg = np.bincount(items[keep], minlength=items.max() + 1)
            ok &= item_deg[items] >= k
        new_keep = keep & ok
        if mode == "user_only" or new_keep.sum() == keep.sum():
            keep = new_keep
            break
        keep = new_keep
    return frame[keep]


def min_count_filter(frame: pd.DataFrame, min_user: int, min_item: int) -> pd.DataFrame:
    """One pass: users with < ``min_user`` rows, then items with < ``min_item`` rows, are dropped."""
    if min_user > 0:
        frame = frame[frame.groupby("user")["user"].transform("size") >= min_user]
    if min_item > 0:
        frame = frame[frame.groupby("item")["item"].transform("size") >= min_item]
    return frame


def item_token_collisions(frames: dict[str, pd.DataFrame]) -> dict[str, list[str]]:
    """Item tokens that occur in more than one domain: token -> the domains it occurs in."""
    seen: dict[str, list[str]] = {}
    for domain, frame in frames.items():
        for token in pd.unique(frame["item"].astype(str)):
            seen.setdefault(token, []).append(domain)
    return {token: domains for token, domains in seen.items() if len(domains) > 1}


def resolve_item_tokens(frames: dict[str, pd.DataFrame], namespace: Optional[bool]) -> dict[str, pd.DataFrame]:
    """``data.namespace_item_tokens``: ``true`` prefixes every item token with its domain; ``false``
    keeps raw tokens but stops when one occurs in two domains (code that matches raw tokens across
    domains, like HAGO's, would silently merge those items); ``null`` keeps raw tokens unchecked
    (cdrbench never merges items of different domains)."""
    if namespace is None:
        return frames
    if namespace:
        return {d: f.assign(item=d + ":" + f["item"].astype(str)) for d, f in frames.items()}
    collisions = item_token_collisions(frames)
    if collisions:
        examples = ", ".join(f"{t!r} ({'/'.join(d)})" for t, d in list(collisions.items())[:5])
        raise ConfigError(
            f"data.namespace_item_tokens=false, but {len(collisions)} item tokens occur in more than one domain "
            f"(e.g. {examples}); code that matches raw tokens would merge them into one item. Choose explicitly: "
            "data.namespace_item_tokens=true keeps them apart (tokens become '<domain>:<token>'), "
            "data.namespace_item_tokens=null keeps raw tokens without this check"
        )
    return frames


def kcore_merged(frames: dict[str, pd.DataFrame], spec) -> dict[str, pd.DataFrame]:
    """``data.source_filter=merged``: the k-core and one-pass filters of ``spec`` on the
    concatenated source domains as one data set (users count rows across domains; an item is
    its domain and token, so items of two domains never merge here)."""
    domains = list(frames)
    merged = pd.concat([frames[d] for d in domains], ignore_index=True)
    keyed = merged.assign(item=merged["domain"].astype(str) + "\x1f" + merged["item"].astype(str))
    keyed = kcore_filter(keyed, spec.kcore, spec.kcore_mode)
    keyed = min_count_filter(keyed, spec.min_user_interactions, spec.min_item_interactions)
    kept = merged.loc[keyed.index]
    return {d: kept[kept["domain"] == d] for d in domains}


def select_users(frames: dict[str, pd.DataFrame], policy: str) -> dict[str, pd.DataFrame]:
    if policy == "all":
        return frames
    common = None
    for frame in frames.values():
        users = set(frame["user"].unique())
        common = users if common is None else common & users
    if not common and len(frames) > 1:
        sizes = ", ".join(f"'{d}' {f['user'].nunique()}" for d, f in frames.items())
        raise DataFormatError(
            f"data.users=common: no user appears in every domain (users per domain: {sizes}); the domains' "
            "user columns must hold the same ids (check each reader's user column), or set data.users=all"
        )
    return {d: f[f["user"].isin(common)] for d, f in frames.items()}


def drop_sparse_target_users(
    frames: dict[str, pd.DataFrame], target: str, min_rows: int
) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Users with fewer than ``min_rows`` distinct target items leave every domain (once, no
    iteration). Distinct items, not rows: a repeated pair cannot be both a valid and a test row."""
    if min_rows <= 0:
        return frames, []
    counts = frames[target].drop_duplicates(["user", "item"])["user"].value_counts()
    all_users = set().union(*(set(f["user"].unique()) for f in frames.values()))
    sparse = sorted(u for u in all_users if counts.get(u, 0) < min_rows)
    if not sparse:
        return frames, []
    drop = set(sparse)
    return {d: f[~f["user"].isin(drop)] for d, f in frames.items()}, sparse


def time_order(frame: pd.DataFrame, policy: str) -> np.ndarray:
    """Row order used for splitting and id assignment.

    ``stable``: by time, rows with equal time keep their position in the concatenation (sources
    in config order, then the target, each in file order) — BIAO's stable sort. Without any
    time the file order is kept. ``unstable_refcode``: numpy quicksort on time only, which
    reorders same-time rows arbitrarily (the reference code's behaviour; audit only).
    """
    ts = frame["ts"].to_numpy()
    if np.isnan(ts).all():
        return np.arange(len(frame))
    if policy == "stable":
        return np.argsort(ts, kind="stable")
    return np.argsort(ts, kind="quicksort")


def click_labels(rating: np.ndarray, threshold: float) -> np.ndarray:
    """BiGNAS click label: 1 if rating > threshold (ratings 4-5 with threshold 3), else 0."""
    return (rating > threshold).astype(np.float32)


def leakage_cut(frame: pd.DataFrame, target: str) -> np.ndarray:
    """Mask of rows to keep: a source row of user u survives only if its time is strictly before
    the time of u's valid row (the second-to-last target row; the earliest one when a repeated
    pair puts several rows in valid). Target rows always survive."""
    is_target = (frame["domain"] == target).to_numpy()
    valid = frame[is_target & (frame["split"] == VALID).to_numpy()]
    cut_time = valid.groupby("user")["ts"].min()
    user_cut = frame["user"].map(cut_time).to_numpy(dtype=float)
    source_ok = ~np.isnan(user_cut) & (frame["ts"].to_numpy() < user_cut)
    return is_target | source_ok


def _split_rows(target: pd.DataFrame, split) -> np.ndarray:
    users = _codes(target["user"])
    if split.kind == "leave_last_two":
        return splits_module.leave_last_two(users)
    if split.kind == "ratio":
        return splits_module.ratio_split(users, list(split.ratios), split.seed)
    if split.kind == "holdout":
        return splits_module.holdout_split(users, split.test, split.valid_of_train, split.seed, split.group_by)
    if split.kind == "temporal":
        return splits_module.temporal_split(len(target), list(split.ratios))
    raise ConfigError(f"data.split.kind={split.kind!r} is not one of {SPLIT_KINDS}")


def _given_split(target: pd.DataFrame, pair: np.ndarray, unit: str) -> np.ndarray:
    if "split" not in target:
        raise ConfigError(
            "data.split.kind=given, but the target reader gives no split: read the target with "
            "cdrbench.data.sources.given.GivenSplit (train/valid/test files) or a reader of pre-split files"
        )
    names = target["split"].astype(object)
    unknown = ~names.isin(list(SPLIT_CODES)).to_numpy()
    if unknown.any():
        raise DataFormatError(f"data.split.kind=given: split values must be train/valid/test, got {names[unknown].iloc[0]!r}")
    codes = names.map(SPLIT_CODES).to_numpy(np.int8)
    crossing = _crossing_pairs(pair, codes)
    if len(crossing) and unit == "pair":
        rows = int(np.isin(pair, crossing).sum())
        example = target.iloc[int(np.flatnonzero(np.isin(pair, crossing))[0])]
        raise DataFormatError(
            f"data.split.kind=given: {len(crossing)} (user, item) pairs ({rows} rows) occur in more than one of "
            f"train/valid/test, e.g. user {example['user']!r} item {example['item']!r}; a pair seen in training "
            "would be an easy hit in evaluation: remove the repeats from your split files "
            "(or accept them with data.split.unit=row)"
        )
    return codes


def _crossing_pairs(pair: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Pair codes whose rows sit in more than one split."""
    per_pair = pd.DataFrame({"pair": pair, "split": codes}).groupby("pair")["split"].nunique()
    return per_pair.index[per_pair.to_numpy() > 1].to_numpy()


def split_target(target: pd.DataFrame, split) -> np.ndarray:
    """Split codes of the time-ordered target rows (``split`` has SplitConfig's fields).

    ``split.unit=pair`` (default): the unit of splitting is the (user, item) pair: a pair's rows
    (repeats kept by ``dedup=keep``) all go to the split its first row (in time order) is drawn
    into, so no pair is ever in both train and valid/test. Without repeats this is the row-wise
    split. ``split.unit=row``: every row on its own (RecBole, the HAGO reference code)."""
    pair = target.groupby(["user", "item"], sort=False).ngroup().to_numpy()
    if split.kind == "given":
        return _given_split(target, pair, split.unit)
    first = np.unique(pair, return_index=True)[1]
    if first.size == len(target) or split.unit == "row":
        return _split_rows(target, split)
    first.sort()  # representatives in time order
    codes_of_pair = np.empty(first.size, dtype=np.int8)
    codes_of_pair[pair[first]] = _split_rows(target.iloc[first], split)
    return codes_of_pair[pair]


def assign_ids(frame: pd.DataFrame, domains: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Users numbered by first appearance (shared across domains), items per domain likewise."""
    user_codes, user_tokens = pd.factorize(frame["user"], sort=False)
    item_codes = np.empty(len(frame), dtype=np.int64)
    item_tokens = {}
    domain_col = frame["domain"].to_numpy()
    for domain in domains:
        mask = domain_col == domain
        codes, tokens = pd.factorize(frame["item"][mask], sort=False)
        item_codes[mask] = codes
        item_tokens[domain] = np.asarray(tokens, dtype=object)
    return user_codes.astype(np.int64), np.asarray(user_tokens, dtype=object), item_codes, item_tokens


def check_domain_shapes(frames: dict[str, pd.DataFrame], cfg) -> None:
    """A domain with a single item, or with more rows than user-item pairs, is a mis-read file
    (typically an item column mapped to a constant), never a data set to train on."""
    for domain, frame in frames.items():
        users, items = frame["user"].nunique(), frame["item"].nunique()
        reader_key = f"data.domains.{domain}.reader"
        if items < 2:
            raise DataFormatError(
                f"domain '{domain}' has {items} item ({frame['item'].iloc[0]!r}) in {len(frame)} rows after preparation: "
                f"the item column is probably mapped wrongly ({reader_key}; e.g. columns.item)"
            )
        density = len(frame) / (users * items)
        if density > 1:
            raise DataFormatError(
                f"domain '{domain}': {len(frame)} rows for {users} users x {items} items ({100 * density:.0f}% density): "
                f"rows repeat pairs many times or a column is mapped wrongly ({reader_key}); data.dedup=first keeps "
                "one row per pair"
            )


# ---------------------------------------------------------------------------- pipeline
def validate_options(cfg) -> None:
    """Fail early, naming the key, on inconsistent data options (see :mod:`cdrbench.validate`)."""
    validate_module.check_data_options(cfg)


class _StepLog:
    """Row counts of every domain after every step, and what the steps found."""

    def __init__(self, domains: list[str]):
        self.domains = domains
        self.steps: list[dict] = []
        self.findings: list[str] = []

    def record(self, step: str, option: str, counts: dict[str, int]) -> None:
        self.steps.append({"step": step, "option": option, "rows": {d: int(counts.get(d, 0)) for d in self.domains}})

    def find(self, message: str) -> None:
        self.findings.append(message)


def _show(value) -> str:
    return "null" if value is None else str(value)


def _rating_summary(frame: pd.DataFrame) -> Optional[str]:
    rating = frame["rating"].to_numpy(dtype=float)
    present = rating[~np.isnan(rating)]
    if not present.size:
        return "no ratings (implicit data)"
    values = np.unique(present)
    shown = ", ".join(f"{v:g}" for v in values) if values.size <= 10 else f"{values.size} distinct values"
    missing = len(rating) - present.size
    return f"ratings {present.min():g}..{present.max():g} ({shown})" + (f", {missing} rows without a rating" if missing else "")


def preprocess(raw: dict[str, pd.DataFrame], cfg, log: Log = print) -> tuple[CrossDomainData, dict]:
    """Run steps 1-9 on tidy tables (``domain -> frame``) and return the data set and a step log
    (``{"steps": [...], "findings": [...]}``). Pure: no files are read or written."""
    validate_options(cfg)
    domains = [*cfg.source, cfg.target]
    steps = _StepLog(domains)

    frames = {}
    for domain in domains:
        frame = raw[domain].copy()
        frame["domain"] = domain
        frame["file_pos"] = np.arange(len(frame))
        frames[domain] = frame
    steps.record("read", "", {d: len(f) for d, f in frames.items()})

    def per_domain_option(key: str, fmt=lambda spec, key: getattr(spec, key)) -> str:
        return f"{key}: " + ", ".join(f"{d}={fmt(cfg.domains[d], key)}" for d in domains)

    per_domain = [
        ("drop_missing_ids", "", lambda f, d, spec: drop_missing_ids(f)),
        ("dedup", f"data.dedup={cfg.dedup}", lambda f, d, spec: deduplicate(f, cfg.dedup)),
        ("min_rating", f"data.min_rating={_show(cfg.min_rating)}", lambda f, d, spec: filter_min_rating(f, cfg.min_rating, d)),
        ("kcore", per_domain_option("kcore", lambda spec, key: f"{spec.kcore} ({spec.kcore_mode})" if spec.kcore else 0),
         lambda f, d, spec: kcore_filter(f, spec.kcore, spec.kcore_mode)),
        ("min_interactions", per_domain_option("min_user/item_interactions",
                                               lambda spec, key: f"{spec.min_user_interactions}/{spec.min_item_interactions}"),
         lambda f, d, spec: min_count_filter(f, spec.min_user_interactions, spec.min_item_interactions)),
    ]
    for domain in domains:
        frame = frames[domain]
        steps.find(f"{domain}: {_rating_summary(frame)}")
        check_ratings(frame, domain, cfg)
        extra, pairs = duplicate_rows(frame)
        if extra:
            kept = "kept (data.dedup=keep: each pair is split as one unit)" if cfg.dedup == "keep" else f"reduced to one per pair (data.dedup={cfg.dedup})"
            steps.find(f"{domain}: {extra} duplicate rows repeat {pairs} (user, item) pairs; {kept}")
        frames[domain] = frame.drop(columns=[c for c in LOCATION_COLUMNS if c in frame])
    # source_filter=merged: the sources' k-core and one-pass filters run once on their concatenation
    merged = cfg.source_filter == "merged" and len(cfg.source) > 1
    for step, option, apply in per_domain:
        if merged and step in ("kcore", "min_interactions"):
            alone = [d for d in domains if d not in cfg.source]
            for domain in alone:
                frames[domain] = apply(frames[domain], domain, cfg.domains[domain])
            if step == "kcore":
                frames.update(kcore_merged({d: frames[d] for d in cfg.source}, cfg.domains[cfg.source[0]]))
                option += " (sources merged: data.source_filter=merged)"
        else:
            for domain in domains:
                frames[domain] = apply(frames[domain], domain, cfg.domains[domain])
        steps.record(step, option, {d: len(f) for d, f in frames.items()})
        if step == "drop_missing_ids":
            frames = resolve_item_tokens(frames, cfg.namespace_item_tokens)
            steps.record("item_tokens", f"data.namespace_item_tokens={_show(cfg.namespace_item_tokens)}",
                         {d: len(f) for d, f in frames.items()})

    frames = select_users(frames, cfg.users)
    steps.record("users", f"data.users={cfg.users}", {d: len(f) for d, f in frames.items()})
    frames, sparse = drop_sparse_target_users(frames, cfg.target, cfg.min_target_interactions)
    if sparse:
        message = (f"dropped {len(sparse)} users with fewer than {cfg.min_target_interactions} distinct target items "
                   f"from every domain (e.g. {', '.join(map(str, sparse[:5]))})")
        log(message)
        steps.find(message)
    steps.record("min_target_interactions", f"data.min_target_interactions={cfg.min_target_interactions}",
                 {d: len(f) for d, f in frames.items()})

    needs_time = cfg.split.kind in ("leave_last_two", "temporal")
    for domain in domains:
        if frames[domain].empty:
            dropped_by = next((s["step"] for s in steps.steps if s["rows"][domain] == 0), "?")
            raise DataFormatError(f"domain '{domain}' has no rows left after step '{dropped_by}' (row counts per step: "
                                  f"{[(s['step'], s['rows'][domain]) for s in steps.steps]})")
        if needs_time and frames[domain]["ts"].isna().any():
            raise DataFormatError(
                f"data.split.kind={cfg.split.kind} needs a timestamp on every row, but domain "
                f"'{domain}' has {int(frames[domain]['ts'].isna().sum())} rows without one"
            )
    check_domain_shapes(frames, cfg)

    # one frame: sources in config order, then the target, each in (filtered) file order
    frame = pd.concat([frames[d] for d in domains], ignore_index=True)
    frame["file_pos"] = np.arange(len(frame))
    frame = frame.iloc[time_order(frame, cfg.sort)].reset_index(drop=True)

    if cfg.label_threshold is not None:
        frame["y"] = click_labels(frame["rating"].to_numpy(), cfg.label_threshold)

    is_target = (frame["domain"] == cfg.target).to_numpy()
    if cfg.split.kind == "leave_last_two":
        counts = frame.loc[is_target].drop_duplicates(["user", "item"])["user"].value_counts()
        if (counts < 2).any():
            raise ConfigError(
                f"data.split.kind=leave_last_two needs >= 2 distinct target items per user; {int((counts < 2).sum())} "
                "users have fewer: set data.min_target_interactions=2"
            )
    split = np.full(len(frame), TRAIN, dtype=np.int8)
    split[is_target] = split_target(frame[is_target], cfg.split)
    if cfg.split.unit == "row":
        target_rows = frame[is_target]
        pair = target_rows.groupby(["user", "item"], sort=False).ngroup().to_numpy()
        crossing = _crossing_pairs(pair, split[is_target])
        if len(crossing):
            steps.find(f"{cfg.target}: {len(crossing)} (user, item) pairs have rows in more than one split "
                       "(data.split.unit=row: a repeated training pair in valid/test is an easy hit)")
    if cfg.split.kind == "given":
        source_split = frame.loc[~is_target, "split"] if "split" in frame else None
        if source_split is not None and (source_split.notna() & (source_split != "train")).any():
            raise DataFormatError("a source domain carries valid/test rows; source rows must all be training rows")
    frame["split"] = split

    if cfg.split.kind == "leave_last_two" and cfg.split.leakage_cut:
        keep = leakage_cut(frame, cfg.target)
        log(f"leakage cut: dropped {int((~keep).sum())} source rows at or after the users' valid time")
        frame = frame[keep].reset_index(drop=True)
        steps.record("leakage_cut", "data.split.leakage_cut=true", frame["domain"].value_counts().to_dict())
    final_counts = frame["domain"].value_counts().reindex(domains, fill_value=0).astype(int).to_dict()
    steps.record("final", "", final_counts)

    user_codes, user_tokens, item_codes, item_tokens = assign_ids(frame, domains)
    domain_col = frame["domain"].to_numpy()
    interactions = {}
    for domain in domains:
        mask = domain_col == domain
        part = pd.DataFrame(
            {
                "user": user_codes[mask],
                "item": item_codes[mask],
                "rating": frame["rating"].to_numpy()[mask],
                "ts": frame["ts"].to_numpy()[mask],
                "split": frame["split"].to_numpy(np.int8)[mask],
            }
        )
        if "y" in frame:
            part["y"] = frame["y"].to_numpy()[mask]
        interactions[domain] = Interactions.from_frame(part)
    data = CrossDomainData(
        name=cfg.name,
        source_domains=list(cfg.source),
        target_domain=cfg.target,
        user_tokens=user_tokens,
        item_tokens=item_tokens,
        interactions=interactions,
    )
    return data, {"steps": steps.steps, "findings": steps.findings}


# ---------------------------------------------------------------------------- cache
def _source_hash(objects) -> str:
    digest = hashlib.sha256()
    for obj in objects:
        digest.update(inspect.getsource(obj).encode())
    return digest.hexdigest()


def options_for_key(cfg) -> dict:
    """Every option that changes the prepared content (not name, paths, download, expectations)."""
    options = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    for key in ("name", "root", "cache_dir", "download", "expected", "use_source", "domains"):
        options.pop(key, None)
    options["domains"] = {
        d: {k: v for k, v in (dataclasses.asdict(spec) if dataclasses.is_dataclass(spec) else dict(spec)).items() if k != "reader"}
        for d, spec in cfg.domains.items()
    }
    return options


def cache_key(cfg, readers: dict[str, Reader], file_hashes: dict[str, dict[str, str]]) -> str:
    reader_modules = sorted({m for r in readers.values() for m in r.source_modules()}, key=lambda m: m.__name__)
    payload = {
        "options": options_for_key(cfg),
        "readers": {d: {"class": f"{type(r).__module__}.{type(r).__qualname__}", "params": r.describe()} for d, r in readers.items()},
        "files": file_hashes,
        "code": _source_hash([sys.modules[__name__], splits_module, dataset_module, *reader_modules]),
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def resolve_root(root: str) -> Path:
    return resolve_path(root)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/cdrbench/prepared``, else ``~/.cache/cdrbench/prepared``."""
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser().resolve() / "cdrbench" / "prepared"


def resolve_cache_dir(cfg) -> Path:
    """``data.cache_dir``, else the user cache: a data folder is only ever read."""
    return resolve_root(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()


def _check_root(cfg, root: Path, needed: list) -> None:
    """The data root must exist when files are needed, unless they may all be downloaded into it."""
    if root.exists():
        if not root.is_dir():
            raise DataFileError(f"data.root={cfg.root} is a file ({root}), not a directory holding the data folders")
        return
    if not needed or (cfg.download and all(raw.url for raw in needed)):
        return  # generated data, or every file will be downloaded (which creates the folder)
    first = next((raw for raw in needed if not raw.url), needed[0])
    raise DataFileError(
        f"data.root={cfg.root} does not exist ({root}); nothing was created. Point data.root (or $CDRBENCH_DATA) "
        f"at the folder that holds your data folders.\n{missing_file_error(first, root / first.relpath)}"
    )


def _remove_empty_tree(root: Path) -> None:
    """Remove ``root`` if it holds nothing but empty folders."""
    if not root.is_dir() or any(p.is_file() for p in root.rglob("*")):
        return
    shutil.rmtree(root, ignore_errors=True)


def _load_cached(final: Path, log: Log) -> Optional[CrossDomainData]:
    """The cached data set, or ``None`` (an entry with a file missing or unreadable is removed)."""
    if not final.exists():
        return None
    try:
        data = CrossDomainData.load(final)
    except (OSError, ValueError, KeyError) as error:
        log(f"prepared data {final} is incomplete or unreadable ({type(error).__name__}: {error}); rebuilding it")
        broken = final.with_name(f".broken-{final.name}-{os.getpid()}")
        try:
            os.rename(final, broken)
            shutil.rmtree(broken, ignore_errors=True)
        except OSError:
            pass
        return None
    log(f"using prepared data {final}")
    return data


def prepare(
    cfg,
    readers: dict[str, Reader],
    progress: bool = True,
    log: Log = print,
) -> CrossDomainData:
    """Make sure the raw files are present and verified, then load the prepared data from the
    cache or build it. ``cfg`` has the fields of :class:`cdrbench.config.DataConfig`; ``readers``
    maps each domain to its reader."""
    validate_options(cfg)
    root = resolve_root(cfg.root)
    domains = [*cfg.source, cfg.target]
    for domain in domains:
        readers[domain].domain = domain
    needed = {domain: readers[domain].raw_files(root) for domain in domains}
    _check_root(cfg, root, [raw for files in needed.values() for raw in files])
    cache_root = resolve_cache_dir(cfg)
    cache_root.mkdir(parents=True, exist_ok=True)
    hash_cache = cache_root / "raw-sha256.json"

    file_hashes = {}
    new_root = not root.exists()
    if new_root and any(needed.values()):
        log(f"data.root {root} does not exist: the downloads create it")
    try:
        for domain in domains:
            file_hashes[domain] = ensure_files(needed[domain], root, download=cfg.download, hash_cache=hash_cache, progress=progress)
    except BaseException:
        if new_root:  # a failed download leaves no empty folders behind
            _remove_empty_tree(root)
        raise
    key = cache_key(cfg, readers, file_hashes)
    final = cache_root / f"{cfg.name}-{key[:16]}"
    cached = _load_cached(final, log)
    if cached is not None:
        return cached

    started = time.perf_counter()
    raw, reader_notes = {}, []
    for domain in domains:
        log(f"reading domain '{domain}' ({type(readers[domain]).__name__})")
        raw[domain] = readers[domain].read(root)
        for note in readers[domain].take_notes():
            log(f"warning: {note}")
            reader_notes.append(f"{domain}: warning: {note}")
    data, report = preprocess(raw, cfg, log)
    data.manifest = {
        "cache_key": key,
        "raw_files": file_hashes,
        "options": options_for_key(cfg),
        "readers": {d: {"class": type(r).__name__, "params": r.describe()} for d, r in readers.items()},
        "steps": report["steps"],
        "findings": reader_notes + report["findings"],
        "prepare_seconds": round(time.perf_counter() - started, 3),
        "cdrbench_version": _version(),
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{cfg.name}-", dir=cache_root))
    try:
        os.chmod(tmp, file_mode(directory=True))  # mkdtemp's 0700 would hide a shared cache
        data.save(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / MANIFEST).is_file():  # not a concurrent twin that finished first
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"prepared data written to {final}")
    return CrossDomainData.load(final)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("cdrbench")
    except Exception:  # running from a source tree without install
        return "unknown"


# ---------------------------------------------------------------------------- reporting
def compare_with_expected(stats: pd.DataFrame, expected: Optional[dict]) -> Optional[pd.DataFrame]:
    """Side-by-side table of prepared counts and the paper's (``data.expected``)."""
    if not expected:
        return None
    rows = []
    for domain, numbers in expected.items():
        for key, value in numbers.items():
            ours = stats.loc[domain, key] if domain in stats.index and key in stats.columns else None
            rows.append({"domain": domain, "statistic": key, "paper": value, "prepared": ours,
                         "match": ours is not None and int(ours) == int(value)})
    return pd.DataFrame(rows)


def steps_table(data: CrossDomainData) -> pd.DataFrame:
    """Rows of every domain after every preparation step (from the manifest), and the option
    that step applies: the effect of each option, at a glance."""
    steps = data.manifest.get("steps") or []
    records = [{"step": s["step"], "option": s["option"], **s["rows"]} for s in steps]
    return pd.DataFrame.from_records(records, columns=["step", "option", *data.domains])


def split_findings(data: CrossDomainData) -> list[str]:
    """Label balance per target split and users without a valid or test row."""
    target = data.target_domain
    rows = data.interactions[target]
    out = []
    if rows.y is not None:
        parts = []
        for code, name in SPLIT_NAMES.items():
            y = rows.y[rows.split == code]
            parts.append(f"{name} {int((y > 0.5).sum())} clicks / {int((y <= 0.5).sum())} non-clicks")
        out.append(f"{target}: labels: " + "; ".join(parts))
    else:
        out.append(f"{target}: no click labels (implicit data: top-N only; data.label_threshold sets labels from ratings)")
    users = set(rows.user.unique().tolist())
    for code in (1, 2):
        with_rows = set(rows.user[rows.split == code].unique().tolist())
        missing = len(users - with_rows)
        out.append(f"{target}: {missing} of {len(users)} users have no {SPLIT_NAMES[code]} row"
                   + (" (not evaluated there)" if missing else ""))
    return out


def preparation_report(data: CrossDomainData) -> dict:
    """What ``stage=prepare`` prints and writes: the statistics table, the step table and the
    findings (duplicates, rating ranges, reader warnings, label balance, users without a
    valid/test row)."""
    return {
        "statistics": data.statistics(),
        "steps": steps_table(data),
        "findings": list(data.manifest.get("findings") or []) + split_findings(data),
    }

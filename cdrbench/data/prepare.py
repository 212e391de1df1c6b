"""Raw tidy tables -> :class:`CrossDomainData`, with a content-addressed cache.

The steps run in this order, each a named function below (``data.*`` keys in brackets):

1. ``drop_missing_ids``      rows without a user or item token are dropped
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
   ``drop_sparse_target_users``  users with too few target rows leave every domain
                                                                [min_target_interactions]
6. ``time_order``            sources then target, each in file order; stable sort on time, ties
                             keep that order (BiGNAS/BIAO)                      [sort]
7. ``click_labels``          y = rating > threshold                           [label_threshold]
8. ``split_target``          target split codes; source rows are train        [split.*]
   ``leakage_cut``           leave_last_two: drop source rows at or after the user's
                             second-to-last target time                        [split.leakage_cut]
9. ``assign_ids``            users (shared) and items (per domain) numbered by first
                             appearance in the time order; maps saved as files

The cache key hashes the raw files' sha256, every option above, the readers' parameters and the
source code of this module, ``splits.py`` and the readers' modules: a changed file, option or
preparation code never reuses a stale cache. The cache directory is written under a temporary
name and renamed into place only when complete.
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

from cdrbench.data import dataset as dataset_module
from cdrbench.data import splits as splits_module
from cdrbench.data.dataset import MANIFEST, CrossDomainData, Interactions
from cdrbench.data.download import ensure_files
from cdrbench.data.sources.base import Reader
from cdrbench.data.splits import SPLIT_CODES, TRAIN, VALID
from cdrbench.errors import ConfigError, DataFormatError

Log = Callable[[str], None]

SPLIT_KINDS = ("leave_last_two", "ratio", "holdout", "temporal", "given")
DEDUP_POLICIES = ("keep", "first", "last")
USER_POLICIES = ("all", "common")
SORT_POLICIES = ("stable", "unstable_refcode")
KCORE_MODES = ("bipartite", "user_only")
SOURCE_FILTERS = ("per_domain", "merged")


# ---------------------------------------------------------------------------- steps
def drop_missing_ids(frame: pd.DataFrame) -> pd.DataFrame:
    bad = frame["user"].isna() | frame["item"].isna() | (frame["user"] == "") | (frame["item"] == "")
    return frame[~bad]


def _time_then_file_order(frame: pd.DataFrame) -> np.ndarray:
    return np.lexsort((frame["file_pos"].to_numpy(), frame["ts"].to_numpy()))


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


def filter_domain(frame: pd.DataFrame, spec, cfg, domain: str, kcore: bool = True) -> pd.DataFrame:
    """Steps 2-4 on one domain (the k-core and one-pass filters only with ``kcore``)."""
    frame = deduplicate(frame, cfg.dedup)
    frame = filter_min_rating(frame, cfg.min_rating, domain)
    if kcore:
        frame = kcore_filter(frame, spec.kcore, spec.kcore_mode)
        frame = min_count_filter(frame, spec.min_user_interactions, spec.min_item_interactions)
    return frame


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
    return {d: f[f["user"].isin(common)] for d, f in frames.items()}


def drop_sparse_target_users(
    frames: dict[str, pd.DataFrame], target: str, min_rows: int
) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Users with fewer than ``min_rows`` target rows leave every domain (once, no iteration)."""
    if min_rows <= 0:
        return frames, []
    counts = frames[target]["user"].value_counts()
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
    the time of u's valid row (the second-to-last target row). Target rows always survive."""
    is_target = (frame["domain"] == target).to_numpy()
    valid = frame[is_target & (frame["split"] == VALID).to_numpy()]
    cut_time = pd.Series(valid["ts"].to_numpy(), index=valid["user"].to_numpy())
    user_cut = frame["user"].map(cut_time).to_numpy(dtype=float)
    source_ok = ~np.isnan(user_cut) & (frame["ts"].to_numpy() < user_cut)
    return is_target | source_ok


def split_target(target: pd.DataFrame, split) -> np.ndarray:
    """Split codes of the time-ordered target rows (``split`` has SplitConfig's fields)."""
    users = _codes(target["user"])
    if split.kind == "leave_last_two":
        return splits_module.leave_last_two(users)
    if split.kind == "ratio":
        return splits_module.ratio_split(users, list(split.ratios), split.seed)
    if split.kind == "holdout":
        return splits_module.holdout_split(users, split.test, split.valid_of_train, split.seed, split.group_by)
    if split.kind == "temporal":
        return splits_module.temporal_split(len(target), list(split.ratios))
    if split.kind == "given":
        if "split" not in target:
            raise ConfigError("data.split.kind=given, but the target reader provides no split column")
        return target["split"].map(SPLIT_CODES).to_numpy(np.int8)
    raise ConfigError(f"data.split.kind={split.kind!r} is not one of {SPLIT_KINDS}")


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


# ---------------------------------------------------------------------------- pipeline
def validate_options(cfg) -> None:
    """Fail early, naming the key, on inconsistent data options."""
    if not cfg.domains:
        raise ConfigError("data.domains is empty")
    if cfg.target not in cfg.domains:
        raise ConfigError(f"data.target={cfg.target!r} is not a key of data.domains ({sorted(cfg.domains)})")
    for s in cfg.source:
        if s not in cfg.domains:
            raise ConfigError(f"data.source names {s!r}, which is not a key of data.domains ({sorted(cfg.domains)})")
        if s == cfg.target:
            raise ConfigError(f"data.source contains the target domain {s!r}; source and target must differ")
    if len(set(cfg.source)) != len(cfg.source):
        raise ConfigError(f"data.source lists a domain twice: {list(cfg.source)}")
    unused = set(cfg.domains) - set(cfg.source) - {cfg.target}
    if unused:
        raise ConfigError(f"data.domains has domains that are neither source nor target: {sorted(unused)}")
    if cfg.source_filter == "merged" and len(cfg.source) > 1:
        specs = {d: {k: getattr(cfg.domains[d], k) for k in ("kcore", "kcore_mode", "min_user_interactions",
                                                              "min_item_interactions")} for d in cfg.source}
        if len({json.dumps(v, sort_keys=True) for v in specs.values()}) > 1:
            raise ConfigError(
                "data.source_filter=merged filters the source domains as one data set: their kcore, kcore_mode, "
                f"min_user_interactions and min_item_interactions must agree (data.domains: {specs})"
            )
    checks = [
        ("data.source_filter", cfg.source_filter, SOURCE_FILTERS),
        ("data.dedup", cfg.dedup, DEDUP_POLICIES),
        ("data.users", cfg.users, USER_POLICIES),
        ("data.sort", cfg.sort, SORT_POLICIES),
        ("data.split.kind", cfg.split.kind, SPLIT_KINDS),
    ]
    checks += [(f"data.domains.{d}.kcore_mode", spec.kcore_mode, KCORE_MODES) for d, spec in cfg.domains.items()]
    for key, value, allowed in checks:
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {list(allowed)}")


def preprocess(raw: dict[str, pd.DataFrame], cfg, log: Log = print) -> tuple[CrossDomainData, dict]:
    """Run steps 1-9 on tidy tables (``domain -> frame``) and return the data set and a step log.

    Pure: no files are read or written.
    """
    validate_options(cfg)
    domains = [*cfg.source, cfg.target]
    steps: dict[str, dict] = {}

    def record(step: str, frames: dict[str, pd.DataFrame]) -> None:
        steps[step] = {d: len(f) for d, f in frames.items()}

    frames = {}
    for domain in domains:
        frame = raw[domain].copy()
        frame["domain"] = domain
        frame["file_pos"] = np.arange(len(frame))
        frames[domain] = frame
    record("read", frames)
    frames = resolve_item_tokens({d: drop_missing_ids(f) for d, f in frames.items()}, cfg.namespace_item_tokens)

    merged = cfg.source_filter == "merged" and len(cfg.source) > 1
    for domain in domains:
        each_alone = not (merged and domain in cfg.source)
        frames[domain] = filter_domain(frames[domain], cfg.domains[domain], cfg, domain, kcore=each_alone)
    if merged:
        frames.update(kcore_merged({d: frames[d] for d in cfg.source}, cfg.domains[cfg.source[0]]))
    record("filtered", frames)

    frames = select_users(frames, cfg.users)
    frames, sparse = drop_sparse_target_users(frames, cfg.target, cfg.min_target_interactions)
    if sparse:
        log(
            f"dropped {len(sparse)} users with fewer than {cfg.min_target_interactions} target rows "
            f"from every domain (e.g. {', '.join(map(str, sparse[:5]))})"
        )
    record("users", frames)

    needs_time = cfg.split.kind in ("leave_last_two", "temporal")
    for domain in domains:
        if frames[domain].empty:
            raise DataFormatError(f"domain '{domain}' has no rows left after filtering ({steps})")
        if needs_time and frames[domain]["ts"].isna().any():
            raise DataFormatError(
                f"data.split.kind={cfg.split.kind} needs a timestamp on every row, but domain "
                f"'{domain}' has {int(frames[domain]['ts'].isna().sum())} rows without one"
            )

    # one frame: sources in config order, then the target, each in (filtered) file order
    frame = pd.concat([frames[d] for d in domains], ignore_index=True)
    frame["file_pos"] = np.arange(len(frame))
    frame = frame.iloc[time_order(frame, cfg.sort)].reset_index(drop=True)

    if cfg.label_threshold is not None:
        if frame["rating"].isna().any():
            bad = frame.loc[frame["rating"].isna(), "domain"].unique().tolist()
            raise ConfigError(f"data.label_threshold is set, but domains {bad} have rows without a rating")
        frame["y"] = click_labels(frame["rating"].to_numpy(), cfg.label_threshold)

    is_target = (frame["domain"] == cfg.target).to_numpy()
    if cfg.split.kind == "leave_last_two":
        counts = frame.loc[is_target, "user"].value_counts()
        if (counts < 2).any():
            raise ConfigError(
                f"data.split.kind=leave_last_two needs >= 2 target rows per user; {int((counts < 2).sum())} "
                "users have fewer: set data.min_target_interactions=2"
            )
    split = np.full(len(frame), TRAIN, dtype=np.int8)
    split[is_target] = split_target(frame[is_target], cfg.split)
    if cfg.split.kind == "given":
        source_split = frame.loc[~is_target, "split"] if "split" in frame else None
        if source_split is not None and (source_split.notna() & (source_split != "train")).any():
            raise DataFormatError("a source domain carries valid/test rows; source rows must all be training rows")
    frame["split"] = split

    if cfg.split.kind == "leave_last_two" and cfg.split.leakage_cut:
        keep = leakage_cut(frame, cfg.target)
        log(f"leakage cut: dropped {int((~keep).sum())} source rows at or after the users' valid time")
        frame = frame[keep].reset_index(drop=True)
    steps["final"] = frame["domain"].value_counts().reindex(domains, fill_value=0).astype(int).to_dict()

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
    return data, steps


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
    reader_modules = sorted({sys.modules[type(r).__module__] for r in readers.values()}, key=lambda m: m.__name__)
    payload = {
        "options": options_for_key(cfg),
        "readers": {d: {"class": f"{type(r).__module__}.{type(r).__qualname__}", "params": r.describe()} for d, r in readers.items()},
        "files": file_hashes,
        "code": _source_hash([sys.modules[__name__], splits_module, dataset_module, *reader_modules]),
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def resolve_root(root: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(str(root)))).resolve()


def resolve_cache_dir(cfg, root: Path, log: Log = print) -> Path:
    """``data.cache_dir``, else ``<root>/.cdrbench-prepared``; a read-only root (e.g. a shared data
    folder) sends the cache to the user cache directory instead, and says so."""
    if cfg.cache_dir:
        return resolve_root(cfg.cache_dir)
    inside = root / ".cdrbench-prepared"
    if _writable(inside):
        return inside
    fallback = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "cdrbench" / "prepared"
    log(f"data root {root} is not writable: prepared data goes to {fallback} (set data.cache_dir to choose)")
    return fallback


def _writable(path: Path) -> bool:
    """Writable by us *and* meant to be written: a folder without any write bit (a read-only
    shared data set) counts as read-only even for root, whom ``os.access`` always lets write."""
    probe = path if path.exists() else path.parent
    while not probe.exists():
        probe = probe.parent
    return os.access(probe, os.W_OK) and bool(probe.stat().st_mode & 0o222)


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
    cache_root = resolve_cache_dir(cfg, root, log)
    cache_root.mkdir(parents=True, exist_ok=True)
    hash_cache = cache_root / "raw-sha256.json"

    file_hashes = {}
    for domain in [*cfg.source, cfg.target]:
        reader = readers[domain]
        reader.domain = domain
        file_hashes[domain] = ensure_files(
            reader.raw_files(root), root, download=cfg.download, hash_cache=hash_cache, progress=progress
        )
    key = cache_key(cfg, readers, file_hashes)
    final = cache_root / f"{cfg.name}-{key[:16]}"
    if (final / MANIFEST).is_file():
        log(f"using prepared data {final}")
        return CrossDomainData.load(final)

    started = time.perf_counter()
    raw = {}
    for domain in [*cfg.source, cfg.target]:
        log(f"reading domain '{domain}' ({type(readers[domain]).__name__})")
        raw[domain] = readers[domain].read(root)
    data, steps = preprocess(raw, cfg, log)
    data.manifest = {
        "cache_key": key,
        "raw_files": file_hashes,
        "options": options_for_key(cfg),
        "readers": {d: {"class": type(r).__name__, "params": r.describe()} for d, r in readers.items()},
        "steps": steps,
        "prepare_seconds": round(time.perf_counter() - started, 3),
        "cdrbench_version": _version(),
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{cfg.name}-", dir=cache_root))
    try:
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

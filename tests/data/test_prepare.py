"""Preprocessing steps, splits, ids and the prepare cache, on hand-made frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cdrbench.config import DataConfig, DomainConfig, SplitConfig
from cdrbench.data import prepare as prep
from cdrbench.data.dataset import CrossDomainData
from cdrbench.data.sources.base import RawFile, Reader, tidy_frame
from cdrbench.data.splits import holdout_counts, recbole_counts
from cdrbench.errors import ConfigError, DataFileError

DAY = 86400


def make_cfg(**overrides) -> DataConfig:
    cfg = DataConfig(
        name="hand",
        domains={"s": DomainConfig(reader=None), "t": DomainConfig(reader=None)},
        source=["s"],
        target="t",
    )
    split = overrides.pop("split", None)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    cfg.split = split or SplitConfig()
    return cfg


def frame(rows, domain):
    users, items, ratings, ts = zip(*rows)
    return tidy_frame(users, items, ratings, ts, domain)


# A hand-made two-domain set with same-day ties (spec bignas.md §10.1).
# Target rows of user "a": t1 day 1, t2 day 2, t3 day 2 (tie with t2, later in the file), t4 day 3.
SOURCE = [
    ("a", "s1", 5, 0 * DAY),
    ("a", "s2", 2, 2 * DAY),  # == a's valid time (day 2): cut
    ("a", "s3", 4, 1 * DAY),  # before: kept
    ("b", "s1", 4, 5 * DAY),
    ("b", "s2", 1, 9 * DAY),  # after b's valid time (day 6): cut
    ("c", "s1", 3, 0 * DAY),  # c has one target row: dropped with min_target_interactions=2
    ("e", "s9", 5, 0 * DAY),  # e has no target rows: not common
]
TARGET = [
    ("a", "t1", 5, 1 * DAY),
    ("a", "t2", 3, 2 * DAY),
    ("a", "t3", 4, 2 * DAY),
    ("a", "t4", 2, 3 * DAY),
    ("b", "t1", 4, 6 * DAY),
    ("b", "t2", 5, 7 * DAY),
    ("c", "t1", 4, 1 * DAY),
    ("d", "t1", 4, 1 * DAY),  # d has no source rows: not common
    ("d", "t2", 4, 2 * DAY),
]


def bignas_cfg(**overrides):
    return make_cfg(**{"users": "common", "min_target_interactions": 2, "label_threshold": 3, **overrides})


def test_bignas_protocol_on_hand_made_frame():
    data, steps = prep.preprocess({"s": frame(SOURCE, "s"), "t": frame(TARGET, "t")}, bignas_cfg(), log=lambda _: None)
    users = list(data.user_tokens)
    assert sorted(users) == ["a", "b"]  # common users with >= 2 target rows
    t = data.interactions["t"].to_frame()
    t["u"] = data.user_tokens[t["user"]]
    t["i"] = data.item_tokens["t"][t["item"]]
    split_of = {(r.u, r.i): r.split for r in t.itertuples()}
    # stable order: t2 and t3 share day 2, t3 comes later in the file, so t3 is valid, t4 test
    assert split_of[("a", "t4")] == 2 and split_of[("a", "t3")] == 1
    assert split_of[("a", "t1")] == 0 and split_of[("a", "t2")] == 0
    assert split_of[("b", "t2")] == 2 and split_of[("b", "t1")] == 1
    for code in (1, 2):  # exactly one valid and one test row per user
        assert sorted(t.loc[t["split"] == code, "u"]) == ["a", "b"]
    # labels: rating > 3
    ratings = dict(zip(zip(t["u"], t["i"]), zip(t["rating"], t["y"])))
    assert all(y == float(r > 3) for r, y in ratings.values())
    # leakage cut: a keeps s1 (day 0) and s3 (day 1); s2 (day 2 == valid day) is cut; b keeps day 5 only
    s = data.interactions["s"].to_frame()
    kept = sorted(zip(data.user_tokens[s["user"]], data.item_tokens["s"][s["item"]]))
    assert kept == [("a", "s1"), ("a", "s3"), ("b", "s1")]
    assert (s["split"] == 0).all()


def test_unstable_refcode_sort_is_a_different_flag_value():
    cfg = bignas_cfg(sort="unstable_refcode")
    data, _ = prep.preprocess({"s": frame(SOURCE, "s"), "t": frame(TARGET, "t")}, cfg, log=lambda _: None)
    t = data.interactions["t"]
    assert int((t.split == 1).sum()) == 2 and int((t.split == 2).sum()) == 2


def test_ids_are_first_appearance_in_time_order_and_round_trip(tmp_path):
    data, _ = prep.preprocess({"s": frame(SOURCE, "s"), "t": frame(TARGET, "t")}, bignas_cfg(), log=lambda _: None)
    # first row in time order is (a, s1, day 0)
    assert data.user_tokens[0] == "a" and data.item_tokens["s"][0] == "s1"
    data.save(tmp_path)
    loaded = CrossDomainData.load(tmp_path)
    for domain in ("s", "t"):
        ours, theirs = data.interactions[domain].to_frame(), loaded.interactions[domain].to_frame()
        pd.testing.assert_frame_equal(ours, theirs)
        raw = [(data.user_tokens[u], data.item_tokens[domain][i]) for u, i in zip(ours["user"], ours["item"])]
        back = [(loaded.user_tokens[u], loaded.item_tokens[domain][i]) for u, i in zip(theirs["user"], theirs["item"])]
        assert raw == back
    assert (tmp_path / "users.tsv").read_text().splitlines()[1] == "0\ta"


def test_leave_last_two_requires_two_target_rows():
    with pytest.raises(ConfigError, match="min_target_interactions=2"):
        prep.preprocess(
            {"s": frame(SOURCE, "s"), "t": frame(TARGET, "t")}, make_cfg(users="common", label_threshold=3), log=lambda _: None
        )


def test_kcore_reaches_fixed_point():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 60, size=900)
    items = (rng.zipf(1.6, size=900) % 80).astype(int)
    df = tidy_frame(users, items, np.ones(900), np.zeros(900), "d")
    out = prep.kcore_filter(df, 5)
    assert 0 < len(out) < len(df)
    assert out.groupby("user").size().min() >= 5
    assert out.groupby("item").size().min() >= 5
    assert len(prep.kcore_filter(out, 5)) == len(out)  # fixed point


def test_kcore_cascades_by_hand():
    # u3's only item i2 is dropped (deg 1), then u2 falls to 1 row, then i1 falls to 1 row...
    rows = [("u1", "i1"), ("u1", "i0"), ("u2", "i1"), ("u2", "i2"), ("u0", "i0"), ("u0", "i3"), ("u1", "i3"), ("u0", "i1")]
    df = tidy_frame([r[0] for r in rows], [r[1] for r in rows], np.ones(len(rows)), np.zeros(len(rows)), "d")
    out = prep.kcore_filter(df, 2)
    assert sorted(zip(out["user"], out["item"])) == [("u0", "i0"), ("u0", "i1"), ("u0", "i3"), ("u1", "i0"), ("u1", "i1"), ("u1", "i3")]
    one_pass = prep.kcore_filter(df, 3, mode="user_only")
    assert sorted(one_pass["user"].unique()) == ["u0", "u1"]


def test_dedup_policies_keep_earliest_or_latest():
    df = tidy_frame(["a", "a", "a"], ["x", "x", "y"], [1, 5, 3], [2 * DAY, 1 * DAY, 0], "d")
    df["file_pos"] = np.arange(3)
    assert len(prep.deduplicate(df, "keep")) == 3
    first = prep.deduplicate(df, "first")
    assert first.loc[first["item"] == "x", "rating"].item() == 5  # day 1 is earlier than day 2
    last = prep.deduplicate(df, "last")
    assert last.loc[last["item"] == "x", "rating"].item() == 1


@pytest.mark.parametrize("n, expected", [(2, (1, 0, 1)), (5, (3, 1, 1)), (9, (7, 1, 1)), (10, (8, 1, 1)), (15, (13, 1, 1)), (23, (19, 2, 2))])
def test_recbole_ratio_counts_match_spec_table(n, expected):
    assert tuple(recbole_counts(np.array([n]), [0.8, 0.1, 0.1])[0]) == expected


@pytest.mark.parametrize("n, expected", [(5, (4, 0, 1)), (7, (5, 1, 1)), (13, (9, 1, 3))])
def test_holdout_counts_match_pcrec_examples(n, expected):
    n_test, n_valid = holdout_counts(np.array([n]), 0.2, 0.1)
    assert (n - n_test[0] - n_valid[0], n_valid[0], n_test[0]) == expected


def _random_target(num_users=30, rows_per_user=12, repeats=False):
    """Random rows; ``repeats`` lets a user's items repeat (else each row is a distinct pair)."""
    rng = np.random.default_rng(1)
    users = np.repeat([f"u{i}" for i in range(num_users)], rows_per_user)
    if repeats:
        items = rng.integers(0, 50, size=users.size)
    else:
        items = np.concatenate([rng.permutation(50)[:rows_per_user] for _ in range(num_users)])
    return tidy_frame(users, items, rng.integers(1, 6, size=users.size), np.arange(users.size) * 10.0, "t")


@pytest.mark.parametrize("kind", ["ratio", "holdout"])
def test_same_seed_same_split_other_seed_other_split(kind):
    raw = {"s": _random_target().assign(domain="s"), "t": _random_target()}

    def split_for(seed):
        cfg = make_cfg(split=SplitConfig(kind=kind, seed=seed))
        data, _ = prep.preprocess(raw, cfg, log=lambda _: None)
        f = data.interactions["t"].to_frame()
        return list(zip(data.user_tokens[f["user"]], f["item"], f["split"]))

    assert split_for(7) == split_for(7)
    assert split_for(7) != split_for(8)


def test_ratio_split_per_user_counts():
    cfg = make_cfg(split=SplitConfig(kind="ratio", seed=3))
    raw = {"s": _random_target().assign(domain="s"), "t": _random_target(repeats=True)}
    data, _ = prep.preprocess(raw, cfg, log=lambda _: None)
    f = data.interactions["t"].to_frame()
    # the unit of splitting is the distinct (user, item) pair (the random items repeat): each
    # user's pairs follow RecBole's counts, and every pair sits in exactly one split
    pairs = f.drop_duplicates(["user", "item", "split"])
    assert not pairs.duplicated(["user", "item"]).any()
    per_user = pairs.groupby("user")["split"].value_counts().unstack(fill_value=0)
    expected = recbole_counts(per_user.sum(axis=1).to_numpy(), [0.8, 0.1, 0.1])
    np.testing.assert_array_equal(per_user[[0, 1, 2]].to_numpy(), expected)
    assert (per_user.sum(axis=1) < 12).any()  # repeats exist, so rows and pairs differ


def test_temporal_split_is_global_time_order():
    cfg = make_cfg(split=SplitConfig(kind="temporal", ratios=[0.5, 0.25, 0.25]))
    raw = {"s": _random_target().assign(domain="s"), "t": _random_target()}
    data, _ = prep.preprocess(raw, cfg, log=lambda _: None)
    f = data.interactions["t"].to_frame()
    assert f.loc[f["split"] == 0, "ts"].max() <= f.loc[f["split"] == 1, "ts"].min()
    assert f.loc[f["split"] == 1, "ts"].max() <= f.loc[f["split"] == 2, "ts"].min()
    assert (f["split"] == 0).sum() == len(f) // 2


def test_no_valid_or_test_interaction_enters_any_graph():
    cfg = make_cfg(split=SplitConfig(kind="ratio", seed=0))
    raw = {"s": _random_target().assign(domain="s"), "t": _random_target()}
    data, _ = prep.preprocess(raw, cfg, log=lambda _: None)
    held = data.rows("t", ["valid", "test"])
    held_pairs = set(zip(held.user.tolist(), held.item.tolist()))
    train = data.train("t")
    train_pairs = set(zip(train.user.tolist(), train.item.tolist()))
    only_held = held_pairs - train_pairs  # pairs repeated in train may legitimately be edges
    assert only_held

    def edges(graph, offset):
        ei = graph.edge_index
        return {(u, i - data.num_users - offset) for u, i in zip(ei[0].tolist(), ei[1].tolist()) if u < data.num_users}

    target_edges = edges(data.bipartite_graph("t"), 0)
    assert not (target_edges & only_held)
    assert target_edges == train_pairs
    unified, offsets = data.unified_graph()
    assert not (edges(unified, offsets["t"]) & only_held)
    assert unified.edge_index.shape[1] == 2 * (len(data.train("s")) + len(train))


def test_unified_graph_layout():
    data, _ = prep.preprocess({"s": frame(SOURCE, "s"), "t": frame(TARGET, "t")}, bignas_cfg(), log=lambda _: None)
    graph, offsets = data.unified_graph()
    assert offsets == {"s": 0, "t": data.num_items("s")}
    assert graph.num_nodes == data.num_users + data.num_items("s") + data.num_items("t")
    # symmetric: every edge appears in both directions
    pairs = set(map(tuple, graph.edge_index.t().tolist()))
    assert all((b, a) in pairs for a, b in pairs)


def test_statistics_count_users_overlap_and_splits():
    data, _ = prep.preprocess({"s": frame(SOURCE, "s"), "t": frame(TARGET, "t")}, bignas_cfg(), log=lambda _: None)
    stats = data.statistics()
    assert stats.loc["t", "users"] == 2 and stats.loc["s", "users"] == 2
    assert stats.loc["t", "interactions"] == 6 and stats.loc["s", "interactions"] == 3
    assert stats.loc["t", ["train", "valid", "test"]].tolist() == [2, 2, 2]
    assert stats.loc["s", "items"] == 2  # s1, s3 (s2 was cut everywhere)
    assert stats.loc["t", "density"] == pytest.approx(6 / (2 * 4))
    assert stats.loc["all", "overlap_users"] == 2


# ---------------------------------------------------------------------------- prepare + cache
class FrameReader(Reader):
    """An in-memory reader backed by one real file (so the cache sees a sha256)."""

    def __init__(self, relpath: str, rows):
        self.relpath = relpath
        self.rows = rows

    def raw_files(self, root: Path):
        return [RawFile(self.relpath, url=f"https://example.invalid/{self.relpath}")]

    def read(self, root: Path):
        (root / self.relpath).read_bytes()
        return frame(self.rows, self.domain)


def _write_raw(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    (root / "s.txt").write_text("source v1")
    (root / "t.txt").write_text("target v1")


def _prepare(root, cache, **overrides):
    cfg = bignas_cfg(root=str(root), cache_dir=str(cache), download=False, **overrides)
    readers = {"s": FrameReader("s.txt", SOURCE), "t": FrameReader("t.txt", TARGET)}
    return prep.prepare(cfg, readers, progress=False, log=lambda _: None)


def test_cache_reused_and_invalidated_by_file_or_option(tmp_path):
    root, cache = tmp_path / "raw", tmp_path / "cache"
    _write_raw(root)
    first = _prepare(root, cache)
    again = _prepare(root, cache)
    assert first.path == again.path
    assert len(list(cache.glob("hand-*"))) == 1
    option_changed = _prepare(root, cache, label_threshold=4)
    assert option_changed.path != first.path
    (root / "t.txt").write_text("target v2")
    file_changed = _prepare(root, cache)
    assert file_changed.path not in (first.path, option_changed.path)
    assert first.manifest["raw_files"]["t"]["t.txt"] != file_changed.manifest["raw_files"]["t"]["t.txt"]


def test_missing_file_with_download_off_names_file_and_url_and_leaves_no_cache(tmp_path):
    root, cache = tmp_path / "raw", tmp_path / "cache"
    root.mkdir()
    (root / "s.txt").write_text("source")
    with pytest.raises(DataFileError) as err:
        _prepare(root, cache)
    message = str(err.value)
    assert str(root / "t.txt") in message and "https://example.invalid/t.txt" in message
    assert "data.download" in message
    assert not list(cache.glob("hand-*")) and not list(cache.glob(".tmp-*"))


def test_crash_while_writing_leaves_no_cache(tmp_path, monkeypatch):
    root, cache = tmp_path / "raw", tmp_path / "cache"
    _write_raw(root)

    def explode(self, path):
        (Path(path) / "users.tsv").write_text("half")
        raise OSError("disk full")

    monkeypatch.setattr(CrossDomainData, "save", explode)
    with pytest.raises(OSError, match="disk full"):
        _prepare(root, cache)
    assert not [p for p in cache.iterdir() if p.name != "raw-sha256.json"]
    monkeypatch.undo()
    data = _prepare(root, cache)  # a later run builds it cleanly
    assert len(data.user_tokens) == 2


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="data.target"):
        prep.validate_options(make_cfg(target="nope"))
    with pytest.raises(ConfigError, match="source and target must differ"):
        prep.validate_options(make_cfg(source=["s", "t"]))
    with pytest.raises(ConfigError, match="data.split.kind"):
        prep.validate_options(make_cfg(split=SplitConfig(kind="random")))


def test_min_rating_without_ratings_is_an_error():
    rows = [(u, i, float("nan"), 0.0) for u, i, _, _ in TARGET]
    with pytest.raises(ConfigError, match="data.min_rating"):
        prep.preprocess({"s": frame(SOURCE, "s"), "t": frame(rows, "t")}, make_cfg(min_rating=3, split=SplitConfig(kind="ratio")), log=lambda _: None)


def test_csr_adjacency_equals_gcn_norm():
    from torch_geometric.nn.conv.gcn_conv import gcn_norm

    from cdrbench.data.graph import bipartite_edge_index, normalized_adjacency

    users = torch.tensor([0, 0, 1, 2, 2, 3])
    items = torch.tensor([0, 1, 1, 0, 2, 2])
    edge_index = bipartite_edge_index(users, items, num_users=4)
    n = 7
    for loops in (False, True):
        ours = normalized_adjacency(edge_index, n, add_self_loops=loops).to_dense()
        ei, w = gcn_norm(edge_index, None, n, add_self_loops=loops)
        theirs = torch.zeros(n, n).index_put_((ei[1], ei[0]), w, accumulate=True)
        torch.testing.assert_close(ours, theirs)
        # and by hand for one entry: user 0 (deg 2) <- item 0 (deg 2): 1/sqrt(2*2), +1 with loops
        expected = 1 / np.sqrt(3 * 3) if loops else 1 / np.sqrt(2 * 2)
        assert ours[0, 4].item() == pytest.approx(expected)

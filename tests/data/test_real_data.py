"""The data configs on the real files in ../shared/data, checked against independent counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cdrbench.app import build_readers, data_config
from cdrbench.config import compose
from cdrbench.data.prepare import prepare
from tests.conftest import shared_path


def prepare_config(name: str, tmp_path, *overrides: str):
    root = shared_path()
    cfg = compose([f"data={name}", f"data.root={root}", f"data.cache_dir={tmp_path}", "data.download=false", *overrides])
    data_cfg = data_config(cfg)
    return prepare(data_cfg, build_readers(data_cfg), progress=False, log=lambda _: None)


def movielens_genre_tables():
    """ML-100K Comedy-only and Drama-only ratings, read with plain pandas (not cdrbench)."""
    folder = shared_path("ml-100k")
    inter = pd.read_csv(folder / "ml-100k.inter", sep="\t")
    inter.columns = ["user", "item", "rating", "ts"]
    items = pd.read_csv(folder / "ml-100k.item", sep="\t")
    genres = items.set_index("item_id:token")["class:token_seq"].fillna("").str.split(" ")
    comedy = {i for i, g in genres.items() if "Comedy" in g and "Drama" not in g}
    drama = {i for i, g in genres.items() if "Drama" in g and "Comedy" not in g}
    return inter[inter["item"].isin(comedy)], inter[inter["item"].isin(drama)]


@pytest.fixture(scope="module")
def ml_comedy_drama(tmp_path_factory):
    return prepare_config("ml100k-comedy-drama", tmp_path_factory.mktemp("cache"))


def test_ml_comedy_drama_statistics_match_hand_computation(ml_comedy_drama):
    data = ml_comedy_drama
    comedy, drama = movielens_genre_tables()
    shared = set(comedy["user"]) & set(drama["user"])
    assert len(shared) == 938  # the data README's figure
    enough = {u for u in shared if (drama["user"] == u).sum() >= 2}
    assert len(shared - enough) == 2  # MovieLens users 300 and 822 (spec §1.3)
    assert data.num_users == len(enough) == 936
    assert set(map(int, data.user_tokens)) == enough
    target = drama[drama["user"].isin(enough)]
    assert len(data.interactions["drama"]) == len(target) == 35737
    assert data.num_items("drama") == target["item"].nunique() == 636
    stats = data.statistics()
    assert stats.loc["drama", ["train", "valid", "test"]].tolist() == [35737 - 2 * 936, 936, 936]
    # source rows after the cut: strictly before each user's second-to-last target time
    # (same-time target rows are ordered as in the file: a stable sort)
    ordered = target.reset_index(drop=True).sort_values("ts", kind="stable")
    cut = ordered.groupby("user")["ts"].apply(lambda ts: ts.iloc[-2])
    source = comedy[comedy["user"].isin(enough)]
    kept = source[source["ts"] < source["user"].map(cut)]
    assert len(data.interactions["comedy"]) == len(kept) == 23284
    assert data.num_items("comedy") == kept["item"].nunique() == 415


def test_ml_comedy_drama_bignas_protocol(ml_comedy_drama):
    data = ml_comedy_drama
    t = data.interactions["drama"].to_frame()
    s = data.interactions["comedy"].to_frame()
    for code in (1, 2):  # exactly one valid and one test row per common user
        counts = t.loc[t["split"] == code, "user"].value_counts()
        assert len(counts) == data.num_users and (counts == 1).all()
    assert ((t["y"] == 1) == (t["rating"] > 3)).all()
    assert ((s["y"] == 1) == (s["rating"] > 3)).all()
    valid_time = t[t["split"] == 1].set_index("user")["ts"]
    assert (s["ts"] < s["user"].map(valid_time)).all()
    # the test row is the user's latest target row, the valid row the one before
    last_train = t[t["split"] == 0].groupby("user")["ts"].max()
    assert (valid_time.reindex(last_train.index) >= last_train).all()
    test_time = t[t["split"] == 2].set_index("user")["ts"]
    assert (test_time >= valid_time.reindex(test_time.index)).all()


def test_douban_dtcdr_statistics(tmp_path):
    data = prepare_config("douban-dtcdr", tmp_path)
    folder = shared_path("douban-dtcdr")
    book = pd.read_csv(folder / "douban_book_ratings.dat", sep="\t", header=None, names=["u", "i", "r"])
    music = pd.read_csv(folder / "douban_music_ratings.dat", sep="\t", header=None, names=["u", "i", "r"])
    stats = data.statistics()
    assert stats.loc["book", "overlap_users"] == len(set(book["u"]) & set(music["u"])) == 1566
    assert stats.loc["book", "users"] == book["u"].nunique() == 2110
    assert stats.loc["book", "items"] == book["i"].nunique()
    assert stats.loc["music", "interactions"] == len(music) == 69709
    assert stats.loc["book", "interactions"] == len(book) == 96041
    t = data.interactions["book"].to_frame()
    assert ((t["y"] == 1) == (t["rating"] > 3)).all()
    sizes = t.groupby("user")["split"].value_counts().unstack(fill_value=0)
    n = sizes.sum(axis=1)
    # RecBole rounding: floor(10%) valid and test, at least one test row once a user has 2 rows
    assert (sizes[2] >= np.floor(0.1 * n)).all() and (sizes[1] == np.floor(0.1 * n) + ((n >= 3) & (n < 10))).all()


def test_bignas_cd_kitchen_split_structure(tmp_path):
    data = prepare_config("bignas-cd-kitchen", tmp_path)
    assert data.num_users == 2809
    assert len(data.train("cd")) == 53995
    stats = data.statistics()
    assert stats.loc["kitchen", ["train", "valid", "test"]].tolist() == [31941, 2809, 2809]
    assert data.num_items("cd") == 28253 and data.num_items("kitchen") == 14274
    graph = data.bipartite_graph("kitchen")
    assert graph.edge_index.shape[1] == 2 * 31941
    # raw node ids in the files: source items offset by 2809, target items by 2809 + 28253
    assert all(2809 <= int(tok) < 2809 + 28253 for tok in data.item_tokens["cd"])
    assert all(int(tok) >= 2809 + 28253 for tok in data.item_tokens["kitchen"])

"""``data.source_filter`` (per-domain vs merged k-core of the sources) and
``data.namespace_item_tokens`` (the item-token collision check), spec hago.md §2.3, §9 rows 6 and 8."""

from __future__ import annotations

import pytest

from cdrbench.app import build_readers, data_config
from cdrbench.config import DataConfig, DomainConfig, SplitConfig, compose
from cdrbench.data import prepare as prep
from cdrbench.data.sources.base import tidy_frame
from cdrbench.errors import ConfigError
from tests.conftest import shared_path

# user a has 2 rows in s1 and 1 in s2: below k = 3 in each domain alone, 3 rows across both
S1 = [("a", "p"), ("a", "q")] + [(u, i) for u in "bcd" for i in "pqr"]
S2 = [("a", "m")] + [(u, i) for u in "bcd" for i in "mno"]
T = [(u, i) for u in "abcd" for i in ("t1", "t2")]


def frames(s2=S2):
    def frame(rows, domain):
        users, items = zip(*rows)
        return tidy_frame(users, items, [5.0] * len(rows), [0.0] * len(rows), domain)

    return {"s1": frame(S1, "s1"), "s2": frame(s2, "s2"), "t": frame(T, "t")}


def cfg(**overrides):
    config = DataConfig(
        name="hand", domains={"s1": DomainConfig(reader=None, kcore=3), "s2": DomainConfig(reader=None, kcore=3),
                              "t": DomainConfig(reader=None)},
        source=["s1", "s2"], target="t", split=SplitConfig(kind="ratio"),
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def users_of(data, domain):
    return {data.user_tokens[u] for u in data.interactions[domain].user.tolist()}


def rows_after(report, step):
    """Rows per domain after a preparation step, from the step log ``preprocess`` returns."""
    return next(entry["rows"] for entry in report["steps"] if entry["step"] == step)


def test_per_domain_filter_drops_a_user_the_merged_filter_keeps():
    per_domain, steps = prep.preprocess(frames(), cfg(), log=lambda _: None)
    assert "a" not in users_of(per_domain, "s1") and "a" not in users_of(per_domain, "s2")
    assert rows_after(steps, "min_interactions") == {"s1": 9, "s2": 9, "t": 8}
    merged, steps = prep.preprocess(frames(), cfg(source_filter="merged"), log=lambda _: None)
    assert "a" in users_of(merged, "s1") and "a" in users_of(merged, "s2")
    assert rows_after(steps, "min_interactions") == {"s1": 11, "s2": 10, "t": 8}
    assert sorted(merged.item_tokens["s2"]) == ["m", "n", "o"]  # items stay in their own domain


def test_merged_filter_needs_one_kcore_for_all_sources():
    config = cfg(source_filter="merged")
    config.domains["s2"].kcore = 5
    with pytest.raises(ConfigError, match="data.source_filter=merged"):
        prep.validate_options(config)
    with pytest.raises(ConfigError, match="data.source_filter='both'"):
        prep.validate_options(cfg(source_filter="both"))


def test_colliding_item_tokens_need_an_explicit_choice():
    colliding = [("a", "p")] + [(u, i) for u in "bcd" for i in ("p", "n", "o")]  # s2 also has a "p"
    assert prep.item_token_collisions(frames(colliding)) == {"p": ["s1", "s2"]}
    with pytest.raises(ConfigError) as error:
        prep.preprocess(frames(colliding), cfg(namespace_item_tokens=False), log=lambda _: None)
    message = str(error.value)
    assert "data.namespace_item_tokens=false" in message and "'p' (s1/s2)" in message
    assert "data.namespace_item_tokens=true" in message
    data, _ = prep.preprocess(frames(colliding), cfg(namespace_item_tokens=True), log=lambda _: None)
    assert set(data.item_tokens["s2"]) == {"s2:p", "s2:n", "s2:o"} and "s1:p" in set(data.item_tokens["s1"])
    raw, _ = prep.preprocess(frames(colliding), cfg(), log=lambda _: None)  # null: raw tokens, items apart
    assert "p" in set(raw.item_tokens["s1"]) and "p" in set(raw.item_tokens["s2"])
    without, _ = prep.preprocess(frames(), cfg(namespace_item_tokens=False), log=lambda _: None)
    assert set(without.item_tokens["s2"]) == {"m", "n", "o"}  # no collision: false is the raw tokens


def _prepare(name, tmp_path, *overrides):
    config = data_config(compose([f"data={name}", f"data.root={shared_path()}", f"data.cache_dir={tmp_path}", *overrides]))
    return prep.prepare(config, build_readers(config), progress=False, log=lambda _: None)


def test_real_data_collision_check(tmp_path):
    shared_path("ml-100k")
    data = _prepare("ml100k-3genre-hago", tmp_path)  # disjoint genres: no collision
    assert data.source_domains == ["comedy", "drama"] and data.target_domain == "action"
    with pytest.raises(ConfigError, match="item tokens occur in more than one domain"):
        _prepare("ml100k-3genre-hago", tmp_path, "data.domains.comedy.reader.exclude_genres=[Action]",
                 "data.domains.drama.reader.exclude_genres=[Action]")  # Comedy-Drama films in both
    shared_path("douban-dtcdr")  # the two files number their items independently
    with pytest.raises(ConfigError, match="data.namespace_item_tokens=false"):
        _prepare("douban-dtcdr-hago", tmp_path, "data.namespace_item_tokens=false")

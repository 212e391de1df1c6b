"""Raw-file readers: real samples from ../shared/data (checked against counts computed here with
the csv/json modules, independently of the readers) and tiny synthetic files for the edge cases."""

from __future__ import annotations

import csv
import functools
import gzip
import io
import json
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cdrbench.data.sources._io import read_json_lines
from cdrbench.data.sources.amazon2014 import Amazon2014Reviews
from cdrbench.data.sources.amazon2018 import Amazon2018Ratings, Amazon2018Reviews
from cdrbench.data.sources.base import TIDY_COLUMNS
from cdrbench.data.sources.csv import DelimitedFile
from cdrbench.data.sources.movielens import GENRES, ZIP_SHA256, ZIP_URL, MovieLensGenre
from cdrbench.data.sources.presplit import EdgeIndexSplit
from cdrbench.data.sources.recbole import (
    DOUBAN_MEMBERS,
    DOUBAN_ZIP_SHA256,
    DOUBAN_ZIP_SIZE,
    DOUBAN_ZIP_URL,
    RecBoleAtomic,
    douban,
    read_atomic_table,
)
from cdrbench.errors import CdrbenchError, DataFileError, DataFormatError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent")
    return path


def read(reader, root: Path, domain: str = "d") -> pd.DataFrame:
    reader.domain = domain
    frame = reader.read(root)
    assert list(frame.columns[: len(TIDY_COLUMNS)]) == TIDY_COLUMNS
    assert frame["rating"].dtype == np.float64 and frame["ts"].dtype == np.float64
    assert (frame["domain"] == domain).all()
    return frame


def json_rows(path: Path) -> list[dict]:
    opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def assert_matches_json(frame: pd.DataFrame, rows: list[dict]) -> None:
    assert len(frame) == len(rows)
    assert frame["user"].tolist() == [r["reviewerID"] for r in rows]
    assert frame["item"].tolist() == [r["asin"] for r in rows]
    assert frame["rating"].tolist() == [float(r["overall"]) for r in rows]
    assert frame["ts"].tolist() == [float(r["unixReviewTime"]) for r in rows]


# =========================================================================== real samples


def test_amazon2014_digital_music_prefix_matches_json_module():
    path = shared("amazon2014-raw", "reviews_Digital_Music_5.prefix.json.gz")
    reader = Amazon2014Reviews("Digital_Music", folder="amazon2014-raw", filename=path.name)
    frame = read(reader, SHARED, "music")
    rows = json_rows(path)
    assert_matches_json(frame, rows)
    assert (len(frame), frame["user"].nunique(), frame["item"].nunique()) == (6908, 2490, 382)


def test_amazon2014_plain_sample_shares_three_users_with_digital_music():
    music = shared("amazon2014-raw", "reviews_Digital_Music_5.prefix.json.gz")
    instr = shared("amazon2014-raw", "Musical_Instruments_5.sample.json")
    assert instr.read_bytes()[:2] != b"\x1f\x8b"  # the sample really is plain text
    a = read(Amazon2014Reviews("Musical_Instruments", folder="amazon2014-raw", filename=instr.name), SHARED)
    rows = json_rows(instr)
    assert_matches_json(a, rows)
    assert len(a) == 50
    b = read(Amazon2014Reviews("Digital_Music", folder="amazon2014-raw", filename=music.name), SHARED)
    expected = {r["reviewerID"] for r in rows} & {r["reviewerID"] for r in json_rows(music)}
    assert set(a["user"]) & set(b["user"]) == expected
    assert len(expected) == 3


def test_amazon2018_fashion_sample_counts_every_line():
    path = shared("amazon2018-raw", "AMAZON_FASHION_5.sample.json")
    n_lines = len([l for l in path.read_text(encoding="utf-8").splitlines() if l.strip()])
    frame = read(Amazon2018Reviews("AMAZON_FASHION", folder="amazon2018-raw", filename=path.name), SHARED)
    assert n_lines == 175  # the last line has no trailing newline: 174 '\n' but 175 rows
    assert_matches_json(frame, json_rows(path))


def _recbole_date_rows(path: Path):
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    assert rows[0] == ["user_id:token", "item_id:token", "timestamp:float"]
    return rows[1:]


@pytest.mark.parametrize(
    "name, counts",
    [("Pantry.inter", (109_007, 12_608, 4_926)), ("Instruments.inter", (182_861, 23_032, 10_090))],
)
def test_recbole_inter_with_date_timestamps(name, counts):
    path = shared("recbole-atomic", name)
    frame = read(RecBoleAtomic(f"recbole-atomic/{name}"), SHARED)
    rows = _recbole_date_rows(path)
    assert (len(frame), frame["user"].nunique(), frame["item"].nunique()) == counts
    assert len(rows) == counts[0]
    assert frame["user"].tolist() == [r[0] for r in rows]
    assert frame["item"].tolist() == [r[1] for r in rows]
    day = {d: datetime.strptime(d, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp() for d in {r[2] for r in rows}}
    expected_ts = [day[r[2]] for r in rows]
    assert frame["ts"].tolist() == expected_ts
    assert frame["rating"].isna().all()  # no rating field in these files


def test_recbole_pantry_first_row_date_by_hand():
    shared("recbole-atomic", "Pantry.inter")
    frame = read(RecBoleAtomic("recbole-atomic/Pantry.inter"), SHARED)
    assert (frame["user"].iloc[0], frame["item"].iloc[0]) == ("0", "0")
    assert frame["ts"].iloc[0] == 1435017600.0  # 2015-06-23 00:00:00 UTC


def test_read_atomic_table_douban_user_file():
    path = shared("recbole-atomic", "DoubanBook.user")
    table = read_atomic_table(path)
    assert list(table.columns) == ["user_id", "location"]
    assert len(table) == 49_509
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))[1:]
    assert table["user_id"].tolist() == [r[0] for r in rows]
    assert table["location"].tolist() == [r[1] for r in rows]  # "null" stays the string "null"
    assert (table["location"] == "null").any()


@functools.lru_cache(maxsize=None)
def _ml_genre_items() -> dict[str, frozenset]:
    with open(SHARED / "ml-100k" / "ml-100k.item", newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    col = rows[0].index("class:token_seq")
    return {r[0]: frozenset(r[col].split()) for r in rows[1:]}


@functools.lru_cache(maxsize=None)
def _ml_ratings() -> tuple:
    with open(SHARED / "ml-100k" / "ml-100k.inter", newline="", encoding="utf-8") as handle:
        return tuple(tuple(r) for r in list(csv.reader(handle, delimiter="\t"))[1:])


def test_movielens_all_ratings_match_inter_file():
    shared("ml-100k", "ml-100k.inter")
    frame = read(MovieLensGenre(), SHARED)
    rows = _ml_ratings()
    assert len(frame) == 100_000
    assert frame["user"].tolist() == [r[0] for r in rows]
    assert frame["ts"].tolist() == [float(r[3]) for r in rows]
    assert (frame["user"].nunique(), frame["item"].nunique()) == (943, 1682)


def test_movielens_genre_subsets_match_independent_count():
    shared("ml-100k", "ml-100k.item")
    genres = _ml_genre_items()
    tables = {}
    for genre, exclude in [("Comedy", ()), ("Drama", ()), ("Comedy", ("Drama",)), ("Drama", ("Comedy",))]:
        keep = {i for i, g in genres.items() if genre in g and not g & set(exclude)}
        expected = [r for r in _ml_ratings() if r[1] in keep]
        frame = read(MovieLensGenre(genre, list(exclude)), SHARED)
        assert len(frame) == len(expected) > 0
        assert frame["item"].tolist() == [r[1] for r in expected]
        assert frame["user"].tolist() == [r[0] for r in expected]
        assert frame["rating"].tolist() == [float(r[2]) for r in expected]
        tables[genre, exclude] = frame
    # shared/data/README.md: Comedy->Drama after dropping items carrying both: 938 shared users
    comedy, drama = tables["Comedy", ("Drama",)], tables["Drama", ("Comedy",)]
    assert len(set(comedy["user"]) & set(drama["user"])) == 938
    assert len(tables["Comedy", ()]) > len(comedy)  # some items carry both genres


def test_delimited_douban_dtcdr_pair():
    book_path = shared("douban-dtcdr", "douban_book_ratings.dat")
    shared("douban-dtcdr", "douban_music_ratings.dat")
    cols = {"user": 0, "item": 1, "rating": 2}
    book = read(DelimitedFile("douban-dtcdr/douban_book_ratings.dat", sep="\t", columns=cols), SHARED)
    music = read(DelimitedFile("douban-dtcdr/douban_music_ratings.dat", sep="\t", columns=cols), SHARED)
    with open(book_path, newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    assert len(rows) == len(book) == 96_041  # last line has no newline: wc -l says 96,040
    assert book["item"].tolist() == [r[1] for r in rows]
    assert book["rating"].tolist() == [float(r[2]) for r in rows]
    assert book["ts"].isna().all()
    assert (book["user"].nunique(), book["item"].nunique()) == (2_110, 6_777)
    assert (len(music), music["user"].nunique(), music["item"].nunique()) == (69_709, 1_672, 5_567)
    assert len(set(book["user"]) & set(music["user"])) == 1_566
    # columns=None takes user, item, rating positionally: same table
    auto = read(DelimitedFile("douban-dtcdr/douban_music_ratings.dat", sep="\t"), SHARED)
    pd.testing.assert_frame_equal(auto, music)


def test_edge_index_split_bignas_files():
    folder = shared("bignas-cd-kitchen-split")

    def lines(name):
        with open(folder / name, newline="") as handle:
            return list(csv.reader(handle))

    source = read(EdgeIndexSplit("source"), SHARED)
    assert len(source) == 53_995
    assert (source["split"] == "train").all()
    assert source[["user", "item"]].values.tolist() == lines("source_train_edge_index.csv")
    target = read(EdgeIndexSplit("target"), SHARED)
    expected = (
        lines("target_train_edge_index.csv")
        + lines("target_valid_edge_index.csv")
        + lines("target_test_edge_index.csv")
    )
    assert target[["user", "item"]].values.tolist() == expected
    assert target["split"].tolist() == ["train"] * 31_941 + ["valid"] * 2_809 + ["test"] * 2_809
    assert target["rating"].isna().all() and target["ts"].isna().all()


# =========================================================================== Amazon JSON


def _review(user, item, rating=5.0, ts=1400000000, **extra):
    return json.dumps({"reviewerID": user, "asin": item, "overall": rating, "unixReviewTime": ts, **extra})


def test_amazon_gzip_detected_by_magic_not_name(tmp_path):
    lines = [_review("u1", "i1", 4.0, 10, reviewText="x", style={"a": "b"}), _review("u2", "i2", 1, 20)]
    text = ("\n".join(lines) + "\n").encode()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "gz_without_suffix.json").write_bytes(gzip.compress(text))
    (tmp_path / "a" / "plain_with_suffix.json.gz").write_bytes(text)
    for name in ("gz_without_suffix.json", "plain_with_suffix.json.gz"):
        frame = read(Amazon2014Reviews("X", folder="a", filename=name), tmp_path)
        assert frame["user"].tolist() == ["u1", "u2"]
        assert frame["item"].tolist() == ["i1", "i2"]
        assert frame["rating"].tolist() == [4.0, 1.0]
        assert frame["ts"].tolist() == [10.0, 20.0]


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(
    "bad, why",
    [
        ('{"reviewerID": "u3", "asin": "i3", "overall": 5.0, ', "malformed"),
        ('{"reviewerID": "u3", "asin": "i3", "overall": NaN, "unixReviewTime": 1}', "malformed"),
        ('{"asin": "i3", "overall": 5.0, "unixReviewTime": 1}', "reviewerID"),
        ('{"reviewerID": 3, "asin": "i3", "overall": 5.0, "unixReviewTime": 1}', "reviewerID"),
        ('["u3", "i3"]', "object"),
    ],
)
def test_amazon_bad_line_names_file_and_line(tmp_path, bad, why, compress):
    text = "\n".join([_review("u1", "i1"), _review("u2", "i2"), bad, _review("u4", "i4")]) + "\n"
    (tmp_path / "amazon2014").mkdir()
    path = tmp_path / "amazon2014" / "reviews_X_5.json.gz"
    path.write_bytes(gzip.compress(text.encode()) if compress else text.encode())
    with pytest.raises(DataFormatError) as info:
        read(Amazon2014Reviews("X"), tmp_path)
    message = str(info.value)
    assert str(path) in message and "line 3" in message and why in message


def test_json_line_longer_than_block_still_reads(tmp_path):
    path = tmp_path / "long.json"
    long_text = "y" * 5000
    path.write_text(_review("u1", "i1") + "\n" + _review("u2", "i2", reviewText=long_text) + "\n")
    fields = [("reviewerID", "str"), ("asin", "str"), ("overall", "num"), ("unixReviewTime", "num")]
    cols = read_json_lines(path, fields, block_size=1024)  # the fast path cannot hold line 2
    assert list(cols["reviewerID"]) == ["u1", "u2"]
    assert list(cols["overall"]) == [5.0, 5.0]


def test_amazon_truncated_gzip_is_a_file_error(tmp_path):
    (tmp_path / "amazon2014").mkdir()
    data = gzip.compress(("\n".join(_review(f"u{i}", "i") for i in range(2000)) + "\n").encode())
    (tmp_path / "amazon2014" / "reviews_X_5.json.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFileError, match="truncated"):
        read(Amazon2014Reviews("X"), tmp_path)


def test_amazon_raw_files_official_names_and_urls(tmp_path):
    [raw] = Amazon2014Reviews("Books").raw_files(tmp_path)
    assert raw.relpath == "amazon2014/reviews_Books_5.json.gz"
    assert raw.url == "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/reviews_Books_5.json.gz"
    assert raw.page == "http://jmcauley.ucsd.edu/data/amazon/"
    [renamed] = Amazon2014Reviews("Books", filename="books_sample.json").raw_files(tmp_path)
    assert renamed.relpath == "amazon2014/books_sample.json" and renamed.url is None
    [rev] = Amazon2018Reviews("Prime_Pantry").raw_files(tmp_path)
    assert rev.relpath == "amazon2018/Prime_Pantry_5.json.gz"
    assert rev.url == "http://deepyeti.ucsd.edu/jianmo/amazon/categoryFilesSmall/Prime_Pantry_5.json.gz"
    assert rev.page == "https://nijianmo.github.io/amazon/"
    [rat] = Amazon2018Ratings("Prime_Pantry").raw_files(tmp_path)
    assert rat.relpath == "amazon2018/Prime_Pantry.csv"
    assert rat.url == "http://deepyeti.ucsd.edu/jianmo/amazon/categoryFilesSmall/Prime_Pantry.csv"
    # describe() reflects the content-changing parameters
    assert Amazon2014Reviews("Books").describe() != Amazon2014Reviews("Books", filename="x").describe()
    assert Amazon2014Reviews("Books").describe()["category"] == "Books"


def test_amazon_missing_file_names_path_and_url(tmp_path):
    with pytest.raises(DataFileError) as info:
        read(Amazon2014Reviews("Toys_and_Games"), tmp_path)
    message = str(info.value)
    assert str(tmp_path / "amazon2014" / "reviews_Toys_and_Games_5.json.gz") in message
    assert "snap.stanford.edu" in message


def test_amazon2018_ratings_item_column_first(tmp_path):
    (tmp_path / "amazon2018").mkdir()
    (tmp_path / "amazon2018" / "Prime_Pantry.csv").write_text(
        "B00ITEM1,AUSER1,5.0,1400000000\nB00ITEM2,AUSER2,3.0,1400000100\n"
    )
    frame = read(Amazon2018Ratings("Prime_Pantry"), tmp_path)
    assert frame["item"].tolist() == ["B00ITEM1", "B00ITEM2"]
    assert frame["user"].tolist() == ["AUSER1", "AUSER2"]
    assert frame["rating"].tolist() == [5.0, 3.0]
    assert frame["ts"].tolist() == [1400000000.0, 1400000100.0]


def test_amazon2018_ratings_wrong_shape_is_an_error(tmp_path):
    (tmp_path / "amazon2018").mkdir()
    (tmp_path / "amazon2018" / "X.csv").write_text("B1,A1,5.0\nB2,A2,3.0\n")
    with pytest.raises(DataFormatError, match="4 columns"):
        read(Amazon2018Ratings("X"), tmp_path)


# =========================================================================== RecBole


def test_recbole_comma_separator_and_numeric_timestamps(tmp_path):
    (tmp_path / "x.inter").write_text(
        "user_id:token,item_id:token,rating:float,timestamp:float\nu1,i1,4,100\nu2,i9,2.5,200.5\n"
    )
    frame = read(RecBoleAtomic("x.inter"), tmp_path)
    assert frame["user"].tolist() == ["u1", "u2"]
    assert frame["item"].tolist() == ["i1", "i9"]
    assert frame["rating"].tolist() == [4.0, 2.5]
    assert frame["ts"].tolist() == [100.0, 200.5]


def test_recbole_without_rating_or_timestamp_gives_nan(tmp_path):
    (tmp_path / "x.inter").write_text("item_id:token\tuser_id:token\ni1\tu1\n")
    frame = read(RecBoleAtomic("x.inter"), tmp_path)
    assert frame["user"].tolist() == ["u1"] and frame["item"].tolist() == ["i1"]
    assert frame["rating"].isna().all() and frame["ts"].isna().all()


@pytest.mark.parametrize("value", ["2015/06/23", "23-06-2015", "yesterday"])
def test_recbole_bad_timestamp_names_file_column_and_value(tmp_path, value):
    path = tmp_path / "x.inter"
    path.write_text(f"user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\t2015-06-23\nu2\ti2\t{value}\n")
    with pytest.raises(DataFormatError) as info:
        read(RecBoleAtomic("x.inter"), tmp_path)
    message = str(info.value)
    assert str(path) in message and "timestamp" in message and value in message


def test_recbole_header_without_user_id_is_an_error(tmp_path):
    (tmp_path / "x.inter").write_text("uid:token\titem_id:token\nu1\ti1\n")
    with pytest.raises(DataFormatError, match="user_id"):
        read(RecBoleAtomic("x.inter"), tmp_path)


def test_recbole_reads_zip_member_without_extracting(tmp_path):
    member = DOUBAN_MEMBERS["music"]
    body = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n7\t42\t5.0\t1234567890\n8\t43\t1\t1\n"
    (tmp_path / "douban-recbole").mkdir()
    archive = tmp_path / "douban-recbole" / "Douban.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(DOUBAN_MEMBERS["book"], "user_id:token\titem_id:token\nx\ty\n")
        zf.writestr(member, body)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    reader = RecBoleAtomic(member, archive="douban-recbole/Douban.zip")
    frame = read(reader, tmp_path)
    assert frame["user"].tolist() == ["7", "8"]
    assert frame["item"].tolist() == ["42", "43"]
    assert frame["rating"].tolist() == [5.0, 1.0]
    assert frame["ts"].tolist() == [1234567890.0, 1.0]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing extracted
    [raw] = reader.raw_files(tmp_path)
    assert raw.relpath == "douban-recbole/Douban.zip"
    with pytest.raises(DataFormatError, match="no member"):
        read(RecBoleAtomic("Douban/Nope/Nope.inter", archive="douban-recbole/Douban.zip"), tmp_path)


def test_douban_helper_declares_the_published_archive(tmp_path):
    reader = douban("book")
    [raw] = reader.raw_files(tmp_path)
    assert raw.relpath == "douban-recbole/Douban.zip"
    assert raw.url == DOUBAN_ZIP_URL == "https://recbole.s3-accelerate.amazonaws.com/CrossDomain/Douban.zip"
    assert raw.sha256 == DOUBAN_ZIP_SHA256
    assert raw.size == DOUBAN_ZIP_SIZE == 35_496_374
    assert reader.path == "Douban/DoubanBook/DoubanBook.inter"
    with pytest.raises(ValueError):
        douban("games")


def test_read_atomic_table_types_and_text_handle():
    text = "item_id:token\ttitle:token_seq\tprice:float\temb:float_seq\n1\tToy Story\t9.5\t1 2\n2\tHeat\t\t3\n"
    table = read_atomic_table(io.StringIO(text))
    assert list(table.columns) == ["item_id", "title", "price", "emb"]
    assert table["item_id"].tolist() == ["1", "2"]
    assert table["title"].tolist() == ["Toy Story", "Heat"]  # token_seq kept as the raw string
    assert table["price"].dtype == np.float64
    assert table["price"].iloc[0] == 9.5 and np.isnan(table["price"].iloc[1])
    assert table["emb"].tolist() == ["1 2", "3"]
    binary = read_atomic_table(io.BytesIO(text.encode()))
    pd.testing.assert_frame_equal(binary, table)


def test_read_atomic_table_rejects_unknown_type():
    with pytest.raises(DataFormatError, match="unknown type"):
        read_atomic_table(io.StringIO("a:token\tb:int\n1\t2\n"))


# =========================================================================== MovieLens

_FAKE_MOVIES = {
    # id: (title, genres)
    "1": ("Toy Story (1995)", {"Animation", "Children's", "Comedy"}),
    "2": ("Caf\u00e9 Drama (1996)", {"Drama"}),
    "3": ("Funny Sad (1997)", {"Comedy", "Drama"}),
    "4": ("Mystery Box (1997)", {"unknown"}),
}
_FAKE_RATINGS = [
    ("10", "1", "4", "880000001"),
    ("11", "2", "5", "880000002"),
    ("10", "3", "3", "880000003"),
    ("12", "1", "1", "880000004"),
    ("12", "4", "2", "880000005"),
]


def _u_item_bytes() -> bytes:
    lines = []
    for mid, (title, genres) in _FAKE_MOVIES.items():
        flags = ["1" if g in genres else "0" for g in GENRES]
        lines.append("|".join([mid, title, "01-Jan-1995", "", "http://x"] + flags))
    return ("\n".join(lines) + "\n").encode("latin-1")


def _u_data_bytes() -> bytes:
    return ("".join("\t".join(r) + "\n" for r in _FAKE_RATINGS)).encode()


def _expected(genre, exclude=()):
    keep = {m for m, (_, g) in _FAKE_MOVIES.items() if (genre is None or genre in g) and not g & set(exclude)}
    return [r for r in _FAKE_RATINGS if r[1] in keep]


def _check(frame, expected):
    assert frame["user"].tolist() == [r[0] for r in expected]
    assert frame["item"].tolist() == [r[1] for r in expected]
    assert frame["rating"].tolist() == [float(r[2]) for r in expected]
    assert frame["ts"].tolist() == [float(r[3]) for r in expected]


CASES = [(None, ()), ("Comedy", ()), ("Comedy", ("Drama",)), ("Drama", ("Comedy",)), ("unknown", ())]


def test_movielens_grouplens_layout(tmp_path):
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_bytes(_u_data_bytes())
    (folder / "u.item").write_bytes(_u_item_bytes())
    assert [r.relpath for r in MovieLensGenre().raw_files(tmp_path)] == ["ml-100k/u.data", "ml-100k/u.item"]
    for genre, exclude in CASES:
        _check(read(MovieLensGenre(genre, list(exclude)), tmp_path), _expected(genre, exclude))


def test_movielens_zip_layout_when_nothing_extracted(tmp_path):
    [raw] = MovieLensGenre().raw_files(tmp_path)
    assert raw.relpath == "ml-100k/ml-100k.zip"
    assert raw.url == ZIP_URL == "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
    assert raw.sha256 == ZIP_SHA256
    (tmp_path / "ml-100k").mkdir()
    with zipfile.ZipFile(tmp_path / "ml-100k" / "ml-100k.zip", "w") as zf:
        zf.writestr("ml-100k/u.data", _u_data_bytes())
        zf.writestr("ml-100k/u.item", _u_item_bytes())
        zf.writestr("ml-100k/README", "fake")
    for genre, exclude in CASES:
        _check(read(MovieLensGenre(genre, list(exclude)), tmp_path), _expected(genre, exclude))
    assert sorted(p.name for p in (tmp_path / "ml-100k").iterdir()) == ["ml-100k.zip"]


def test_movielens_recbole_layout_gives_the_same_table(tmp_path):
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    inter = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    inter += "".join("\t".join(r) + "\n" for r in _FAKE_RATINGS)
    (folder / "ml-100k.inter").write_text(inter)
    item = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    item += "".join(f"{m}\t{t}\t1995\t{' '.join(sorted(g))}\n" for m, (t, g) in _FAKE_MOVIES.items())
    (folder / "ml-100k.item").write_text(item)
    for genre, exclude in CASES:
        _check(read(MovieLensGenre(genre, list(exclude)), tmp_path), _expected(genre, exclude))


def test_movielens_unknown_genre_lists_valid_ones():
    with pytest.raises(ValueError) as info:
        MovieLensGenre("Comdy")
    assert isinstance(info.value, CdrbenchError)
    assert "Comdy" in str(info.value) and "Comedy" in str(info.value) and "Sci-Fi" in str(info.value)
    with pytest.raises(ValueError, match="Romanse"):
        MovieLensGenre("Comedy", exclude_genres=["Romanse"])
    assert MovieLensGenre("Comedy").describe() != MovieLensGenre("Comedy", ["Drama"]).describe()


# =========================================================================== delimited


def test_delimited_header_names_and_strftime(tmp_path):
    (tmp_path / "r.csv").write_text(
        "when,who,what,stars\n2020-01-02 03:04:05,u1,i1,4\n1970-01-01 00:00:10,u2,i2,2\n"
    )
    reader = DelimitedFile(
        "r.csv", header=True, columns={"user": "who", "item": "what", "rating": "stars", "ts": "when"},
        ts_format="%Y-%m-%d %H:%M:%S",
    )
    frame = read(reader, tmp_path)
    assert frame["user"].tolist() == ["u1", "u2"]
    assert frame["item"].tolist() == ["i1", "i2"]
    assert frame["rating"].tolist() == [4.0, 2.0]
    assert frame["ts"].tolist() == [datetime(2020, 1, 2, 3, 4, 5, tzinfo=timezone.utc).timestamp(), 10.0]


def test_delimited_index_columns_and_unix_ts(tmp_path):
    (tmp_path / "r.tsv").write_text("x\t5\tu1\ti1\t100\ny\t3\tu2\ti2\t200\n")
    reader = DelimitedFile("r.tsv", sep="\t", columns={"user": 2, "item": 3, "ts": 4})
    frame = read(reader, tmp_path)
    assert frame["user"].tolist() == ["u1", "u2"] and frame["item"].tolist() == ["i1", "i2"]
    assert frame["ts"].tolist() == [100.0, 200.0]
    assert frame["rating"].isna().all()


def test_delimited_missing_mapped_column_names_file_and_key(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("a,b\nu1,i1\n")
    with pytest.raises(DataFormatError) as info:
        read(DelimitedFile("r.csv", header=True, columns={"user": "a", "item": "b", "rating": "stars"}), tmp_path)
    assert str(path) in str(info.value) and "'rating'" in str(info.value)
    with pytest.raises(DataFormatError) as info:
        read(DelimitedFile("r.csv", columns={"user": 0, "item": 1, "ts": 7}), tmp_path)
    assert str(path) in str(info.value) and "'ts'" in str(info.value)


def test_delimited_bad_rating_value_is_an_error(tmp_path):
    (tmp_path / "r.csv").write_text("u1,i1,4\nu2,i2,great\n")
    with pytest.raises(DataFormatError, match="great"):
        read(DelimitedFile("r.csv", columns={"user": 0, "item": 1, "rating": 2}), tmp_path)


def test_edge_index_split_rejects_unknown_role():
    with pytest.raises(CdrbenchError, match="role"):
        EdgeIndexSplit("dev")

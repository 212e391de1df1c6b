"""MovieLens 100K with genres as domains (BiGNAS-style Comedy -> Drama, Action -> Romance, ...)."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path
from typing import IO, Optional, Sequence

import numpy as np
import pandas as pd

from cdrbench.data.sources._io import open_binary, require_file, to_float
from cdrbench.data.sources.base import RawFile, Reader, tidy_frame
from cdrbench.data.sources.recbole import read_atomic_table, read_inter
from cdrbench.errors import ConfigError, DataFileError, DataFormatError

ZIP_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
#: size and sha256 of ml-100k.zip as recorded by TensorFlow Datasets
#: (tensorflow/datasets, tensorflow_datasets/url_checksums/movielens.txt); GroupLens itself
#: publishes only an MD5 (ml-100k.zip.md5: 0e33842e24a9c977be4e0107933c0723).
ZIP_SHA256 = "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229"
ZIP_SIZE = 4_924_029
PAGE = "https://grouplens.org/datasets/movielens/100k/"
ZIP_MEMBERS = {"data": "ml-100k/u.data", "item": "ml-100k/u.item"}

#: the 19 genre flags of u.item, in column order (RecBole's ``class`` tokens use the same names)
GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)


class UnknownGenreError(ConfigError, ValueError):
    """A genre name that MovieLens 100K does not have (the message lists the valid ones)."""


def _check_genre(name) -> None:
    if name not in GENRES:
        raise UnknownGenreError(
            f"unknown MovieLens genre {name!r}; valid genres: {', '.join(GENRES)}"
        )


def _read_u_data(handle: IO, label) -> pd.DataFrame:
    try:
        frame = pd.read_csv(
            handle, sep="\t", header=None, index_col=False, dtype=str,
            quoting=csv.QUOTE_NONE, keep_default_na=False, na_filter=False,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataFormatError(f"{label}: not a tab-separated user item rating timestamp file ({err})") from None
    if frame.shape[1] != 4:
        raise DataFormatError(f"{label}: expected 4 tab-separated columns, found {frame.shape[1]}")
    frame.columns = ["user", "item", "rating", "ts"]
    return pd.DataFrame(
        {
            "user": frame["user"],
            "item": frame["item"],
            "rating": to_float(frame["rating"], label, "rating", allow_empty=False),
            "ts": to_float(frame["ts"], label, "timestamp", allow_empty=False),
        }
    )


def _read_u_item(handle: IO, label) -> tuple[pd.Series, np.ndarray]:
    """``(item ids, bool flags [n_items, 19])`` of a pipe-separated latin-1 u.item."""
    try:
        frame = pd.read_csv(
            handle, sep="|", header=None, index_col=False, dtype=str, encoding="latin-1",
            quoting=csv.QUOTE_NONE, keep_default_na=False, na_filter=False,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataFormatError(f"{label}: not a pipe-separated u.item file ({err})") from None
    if frame.shape[1] != 5 + len(GENRES):
        raise DataFormatError(
            f"{label}: expected {5 + len(GENRES)} '|'-separated columns (id, title, dates, URL, "
            f"{len(GENRES)} genre flags), found {frame.shape[1]}"
        )
    flags = frame.iloc[:, 5:]
    bad = ~flags.isin(["0", "1"]).to_numpy()
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataFormatError(
            f"{label}, row {row + 1}: genre flag {GENRES[col]!r} is {flags.iat[row, col]!r}, expected 0 or 1"
        )
    return frame.iloc[:, 0], flags.to_numpy() == "1"


class MovieLensGenre(Reader):
    """Ratings of the MovieLens 100K movies that carry ``genre`` and none of ``exclude_genres``.

    ``genre=None`` keeps every rating (before the exclusion). Accepted layouts inside
    ``<root>/<folder>/``, in this order of preference:

    * RecBole atomic: ``ml-100k.inter`` + ``ml-100k.item`` (genres in ``class:token_seq``);
    * GroupLens: ``u.data`` + ``u.item`` (also under ``<folder>/ml-100k/``, i.e. the zip
      extracted in place);
    * the GroupLens archive ``ml-100k.zip`` (read without extracting). When no layout is present
      this is the file :meth:`raw_files` asks for, downloadable from GroupLens.

    Both layouts give the same table: tokens are GroupLens' user and movie ids, ts are Unix
    seconds, in file order.
    """

    def __init__(
        self,
        genre: Optional[str] = None,
        exclude_genres: Sequence[str] = (),
        folder: str = "ml-100k",
    ):
        if isinstance(exclude_genres, str):
            exclude_genres = [exclude_genres]
        if genre is not None:
            _check_genre(genre)
        for name in exclude_genres:
            _check_genre(name)
        self.genre = genre
        self.exclude_genres = list(exclude_genres)
        self.folder = folder

    # ------------------------------------------------------------------ layout

    def _layout(self, root: Path) -> tuple[str, list[RawFile]]:
        base = Path(root) / self.folder
        if (base / "ml-100k.inter").is_file() and (base / "ml-100k.item").is_file():
            return "recbole", [
                RawFile(f"{self.folder}/ml-100k.inter", page=PAGE),
                RawFile(f"{self.folder}/ml-100k.item", page=PAGE),
            ]
        for sub in ("", "ml-100k/"):
            if (base / sub / "u.data").is_file() and (base / sub / "u.item").is_file():
                return "grouplens", [
                    RawFile(f"{self.folder}/{sub}u.data", page=PAGE),
                    RawFile(f"{self.folder}/{sub}u.item", page=PAGE),
                ]
        return "zip", [
            RawFile(f"{self.folder}/ml-100k.zip", url=ZIP_URL, sha256=ZIP_SHA256, size=ZIP_SIZE, page=PAGE)
        ]

    def raw_files(self, root: Path) -> list[RawFile]:
        return self._layout(root)[1]

    # ------------------------------------------------------------------ read

    def _load(self, root: Path) -> tuple[pd.DataFrame, pd.Series, np.ndarray]:
        """``(ratings, item ids, genre flags)`` from whichever layout is present."""
        layout, raws = self._layout(root)
        paths = [require_file(Path(root) / raw.relpath, raw) for raw in raws]
        if layout == "recbole":
            with open_binary(paths[0]) as handle:
                ratings = read_inter(handle, str(paths[0]))
            items = read_atomic_table(paths[1])
            if "item_id" not in items or "class" not in items:
                raise DataFormatError(f"{paths[1]}: needs item_id and class fields")
            index = {g: k for k, g in enumerate(GENRES)}
            flags = np.zeros((len(items), len(GENRES)), dtype=bool)
            for row, tokens in enumerate(items["class"]):
                for token in str(tokens).split():
                    if token in index:
                        flags[row, index[token]] = True
            return ratings, items["item_id"], flags
        if layout == "grouplens":
            with open_binary(paths[0]) as handle:
                ratings = _read_u_data(handle, str(paths[0]))
            with open_binary(paths[1]) as handle:
                ids, flags = _read_u_item(handle, str(paths[1]))
            return ratings, ids, flags
        try:
            with zipfile.ZipFile(paths[0]) as archive:
                for key, member in ZIP_MEMBERS.items():
                    if member not in archive.namelist():
                        raise DataFormatError(f"{paths[0]}: no member {member!r}")
                with archive.open(ZIP_MEMBERS["data"]) as handle:
                    ratings = _read_u_data(handle, f"{paths[0]}!{ZIP_MEMBERS['data']}")
                with archive.open(ZIP_MEMBERS["item"]) as handle:
                    ids, flags = _read_u_item(handle, f"{paths[0]}!{ZIP_MEMBERS['item']}")
        except (zipfile.BadZipFile, EOFError) as err:
            raise DataFileError(
                f"{paths[0]} is not a readable zip archive ({err}); delete it and download it again."
            ) from None
        return ratings, ids, flags

    def read(self, root: Path) -> pd.DataFrame:
        ratings, ids, flags = self._load(root)
        keep = np.ones(len(ids), dtype=bool) if self.genre is None else flags[:, GENRES.index(self.genre)].copy()
        for name in self.exclude_genres:
            keep &= ~flags[:, GENRES.index(name)]
        selected = set(ids[keep].astype(str))
        rows = ratings[ratings["item"].isin(selected).to_numpy()]
        return tidy_frame(
            rows["user"].to_numpy(), rows["item"].to_numpy(),
            rows["rating"].to_numpy(), rows["ts"].to_numpy(), self.domain,
        )

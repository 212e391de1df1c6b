"""Amazon Review Data 2018 (Ni, Li and McAuley, EMNLP 2019): 5-core reviews and ratings CSVs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd

from cdrbench.data.sources._io import open_binary, require_file, to_float
from cdrbench.data.sources.amazon2014 import read_reviews
from cdrbench.data.sources.base import CategoryFile, tidy_frame
from cdrbench.errors import DataFormatError

URL_BASE = "http://deepyeti.ucsd.edu/jianmo/amazon/categoryFilesSmall/"
PAGE = "https://nijianmo.github.io/amazon/"


class _Amazon2018File(CategoryFile):
    url_base = URL_BASE
    page = PAGE

    def __init__(self, category: str, folder: str = "amazon2018", filename: Optional[str] = None):
        super().__init__(category, folder, filename)

    def _path(self, root: Path) -> Path:
        raw = self.raw_file()
        return require_file(Path(root) / raw.relpath, raw)


class Amazon2018Reviews(_Amazon2018File):
    """``<folder>/<category>_5.json.gz`` (5-core reviews), e.g. ``Prime_Pantry_5.json.gz``.

    Same keys as the 2014 files (``reviewerID``, ``asin``, ``overall``, ``unixReviewTime``),
    parsed by the same streaming reader (see :func:`~cdrbench.data.sources.amazon2014.read_reviews`).
    ``filename`` overrides the file name; the official URL is then not offered.
    """

    suffix = "_5.json.gz"

    def read(self, root: Path) -> pd.DataFrame:
        return read_reviews(self._path(root), self.domain)


class Amazon2018Ratings(_Amazon2018File):
    """``<folder>/<category>.csv`` (ratings only): NO header, columns ``item, user, rating, ts``.

    The ASIN comes *first* (unlike the user-first 2014 rating files); the columns are read by
    position with explicit names, never inferred.
    """

    suffix = ".csv"

    def read(self, root: Path) -> pd.DataFrame:
        path = self._path(root)
        try:
            with open_binary(path) as handle:
                frame = pd.read_csv(
                    handle,
                    header=None,
                    index_col=False,
                    dtype=str,
                    keep_default_na=False,
                    na_filter=False,
                    encoding="utf-8",
                )
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise DataFormatError(f"{path}: not an item,user,rating,timestamp CSV ({err})") from None
        if frame.shape[1] != 4:
            raise DataFormatError(
                f"{path}: expected 4 columns item,user,rating,timestamp, found {frame.shape[1]}"
            )
        frame.columns = ["item", "user", "rating", "ts"]
        short = (frame["ts"] == "").to_numpy()
        if short.any():
            raise DataFormatError(
                f"{path}, row {int(short.argmax()) + 1}: expected 4 fields item,user,rating,timestamp"
            )
        rating = to_float(frame["rating"], path, "rating", allow_empty=False)
        ts = to_float(frame["ts"], path, "timestamp", allow_empty=False)
        return tidy_frame(frame["user"], frame["item"], rating, ts, self.domain)


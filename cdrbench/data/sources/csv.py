"""Generic delimited files (CSV / TSV) with a configurable column mapping."""

from __future__ import annotations

import csv as _csv
import io
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pandas as pd

from cdrbench.data.sources._io import open_binary, require_file, to_float, to_unix_seconds
from cdrbench.data.sources.base import RawFile, Reader, tidy_frame
from cdrbench.errors import ConfigError, DataFormatError

KEYS = ("user", "item", "rating", "ts")


class DelimitedFile(Reader):
    """A delimited interaction file under the data root (plain or gzip, detected by magic).

    ``columns`` maps ``user``/``item`` (required) and ``rating``/``ts`` (optional) to column
    names (``header=True``) or 0-based column indices (``header=False``). ``columns=None``
    takes ``user, item, rating, ts`` positionally (``header=False``) or by those names
    (``header=True``); ``rating``/``ts`` then only where the file has them. ``ts_format``:
    ``None``/``"unix"`` = numeric Unix seconds, else a strftime pattern (naive times are UTC).
    A mapped column that the file lacks raises :class:`DataFormatError` naming the file and the
    key. Only the mapped columns are parsed, all as strings, then converted.
    """

    def __init__(
        self,
        path: str,
        sep: str = ",",
        header: bool = False,
        columns: Optional[dict] = None,
        ts_format: Optional[str] = None,
        url: Optional[str] = None,
        sha256: Optional[str] = None,
    ):
        if columns is not None:
            columns = dict(columns)
            unknown = sorted(set(columns) - set(KEYS))
            if unknown:
                raise ConfigError(f"DelimitedFile({path!r}).columns: unknown keys {unknown}; allowed {list(KEYS)}")
            for key in ("user", "item"):
                if key not in columns:
                    raise ConfigError(f"DelimitedFile({path!r}).columns: the {key!r} column is required")
        self.path = path
        self.sep = sep
        self.header = bool(header)
        self.columns = columns
        self.ts_format = ts_format
        self.url = url
        self.sha256 = sha256

    def raw_file(self) -> RawFile:
        return RawFile(relpath=self.path, url=self.url, sha256=self.sha256)

    def raw_files(self, root: Path) -> list[RawFile]:
        return [self.raw_file()]

    def _first_row(self, path: Path) -> list[str]:
        with open_binary(path) as handle:
            line = handle.readline().decode("utf-8", errors="replace")
        rows = list(_csv.reader(io.StringIO(line), delimiter=self.sep))
        return rows[0] if rows else []

    def _mapping(self, path: Path) -> dict[str, Union[int, str]]:
        first = self._first_row(path)
        if self.columns is None:
            if self.header:
                return {k: k for k in KEYS if k in first or k in ("user", "item")}
            return {k: i for i, k in enumerate(KEYS) if i < max(len(first), 2)}
        mapping = dict(self.columns)
        for key, col in mapping.items():
            if self.header:
                if str(col) not in first:
                    raise DataFormatError(
                        f"{path}: column {col!r} mapped to {key!r} is not in the header {first}"
                    )
                mapping[key] = str(col)
            else:
                if not isinstance(col, int) or isinstance(col, bool):
                    raise DataFormatError(
                        f"{path}: header=False, so columns.{key} must be a 0-based index, got {col!r}"
                    )
                if not 0 <= col < len(first):
                    raise DataFormatError(
                        f"{path}: column index {col} mapped to {key!r} does not exist "
                        f"(the first row has {len(first)} columns)"
                    )
        return mapping

    def read(self, root: Path) -> pd.DataFrame:
        raw = self.raw_file()
        path = require_file(Path(root) / raw.relpath, raw)
        mapping = self._mapping(path)
        usecols = list(dict.fromkeys(mapping.values()))
        try:
            with open_binary(path) as handle:
                frame = pd.read_csv(
                    handle,
                    sep=self.sep,
                    header=0 if self.header else None,
                    usecols=usecols,
                    index_col=False,
                    dtype=str,
                    keep_default_na=False,
                    na_filter=False,
                    encoding="utf-8",
                )
        except pd.errors.EmptyDataError:
            frame = pd.DataFrame({c: pd.Series([], dtype=str) for c in usecols})
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
            raise DataFormatError(f"{path}: cannot parse as {self.sep!r}-separated file ({err})") from None
        n = len(frame)
        for key in ("user", "item"):
            empty = (frame[mapping[key]] == "").to_numpy()
            if empty.any():
                raise DataFormatError(
                    f"{path}, data row {int(empty.argmax()) + 1}: empty {key} (column {mapping[key]!r})"
                )
        rating = (
            to_float(frame[mapping["rating"]], path, str(mapping["rating"]))
            if "rating" in mapping
            else np.full(n, np.nan)
        )
        ts = (
            to_unix_seconds(frame[mapping["ts"]], path, str(mapping["ts"]), self.ts_format)
            if "ts" in mapping
            else np.full(n, np.nan)
        )
        return tidy_frame(frame[mapping["user"]], frame[mapping["item"]], rating, ts, self.domain)

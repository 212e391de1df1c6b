"""Generic delimited files (CSV / TSV) with a configurable column mapping."""

from __future__ import annotations

import csv as _csv
import io
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from cdrbench.data.sources._io import (
    open_binary, read_guard, require_file, require_nonempty, to_float, to_unix_seconds,
)
from cdrbench.data.sources.base import RawFile, Reader, tidy_frame
from cdrbench.errors import ConfigError, DataFormatError

KEYS = ("user", "item", "rating", "ts")


def _is_index(col) -> bool:
    return isinstance(col, int) and not isinstance(col, bool)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class _Prefixed(io.RawIOBase):
    """A binary stream: ``prefix`` bytes, then everything ``handle`` still holds."""

    def __init__(self, prefix: bytes, handle):
        self.prefix, self.handle = prefix, handle

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.prefix:
            n = min(len(buffer), len(self.prefix))
            buffer[:n], self.prefix = self.prefix[:n], self.prefix[n:]
            return n
        data = self.handle.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class DelimitedFile(Reader):
    """A delimited interaction file under the data root (plain or gzip, detected by magic).

    ``columns`` maps ``user``/``item`` (required) and ``rating``/``ts`` (optional) to a column:
    an integer is always a 0-based position (with or without a header), a string is a column
    name of the header line (``header=True`` only). ``columns=None`` takes ``user, item, rating,
    ts`` positionally (``header=False``) or by those names (``header=True``); ``rating``/``ts``
    then only where the file has them. ``header=True`` skips the first line; a header that looks
    like data (every field a number, or its user and item tokens occurring in the data) is
    reported. ``ts_format``: ``None``/``"unix"`` = numeric Unix seconds, else a strftime pattern
    (naive times are UTC).

    Errors name the file and the line: an empty file, a mapped column the file lacks, an empty
    user or item, a non-numeric rating. Lines with more fields than the first line are a warning
    (the extra fields are ignored); an empty rating field is a warning (the row has no rating).
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
            for key, col in columns.items():
                if not _is_index(col) and not isinstance(col, str):
                    raise ConfigError(f"DelimitedFile({path!r}).columns.{key}={col!r}: a 0-based index or a header name")
                if isinstance(col, str) and not header:
                    raise ConfigError(
                        f"DelimitedFile({path!r}).columns.{key}={col!r} is a column name, but header=false: "
                        "set header: true, or give the 0-based column index"
                    )
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
        with read_guard(path), open_binary(path) as handle:
            line = handle.readline().decode("utf-8", errors="replace")
        rows = list(_csv.reader(io.StringIO(line), delimiter=self.sep))
        return rows[0] if rows else []

    def _positions(self, path: Path, first: list[str]) -> dict[str, int]:
        """Column position of every mapped key (names looked up in the header line)."""
        if self.columns is None:
            if not self.header:
                return {k: i for i, k in enumerate(KEYS) if i < max(len(first), 2)}
            for key in ("user", "item"):
                if key not in first:
                    self._missing_name(path, key, first)
            return {k: first.index(k) for k in KEYS if k in first}
        positions = {}
        for key, col in self.columns.items():
            if isinstance(col, str):
                if col not in first:
                    self._missing_name(path, key, first, col)
                positions[key] = first.index(col)
            elif not 0 <= col < len(first):
                raise DataFormatError(
                    f"{path}: column index {col} mapped to {key!r} does not exist "
                    f"(the first line has {len(first)} columns)"
                )
            else:
                positions[key] = col
        return positions

    @staticmethod
    def _missing_name(path: Path, key: str, first: list[str], col: Optional[str] = None):
        raise DataFormatError(f"{path}: column {col or key!r} mapped to {key!r} is not in the header {first}")

    def read(self, root: Path) -> pd.DataFrame:
        raw = self.raw_file()
        path = require_nonempty(require_file(Path(root) / raw.relpath, raw))
        first = self._first_row(path)
        positions = self._positions(path, first)
        width = len(first)
        usecols = sorted(set(positions.values()) | {width})  # column `width` non-empty = extra fields
        with read_guard(path):
            try:
                with open_binary(path) as handle:
                    if self.header:
                        handle.readline()
                    # a leading line of width + 1 empty fields makes pandas keep a column for the
                    # fields beyond the first line's (it refuses more names than any line has)
                    stream = io.BufferedReader(_Prefixed((self.sep * width + "\n").encode(), handle))
                    frame = pd.read_csv(
                        stream, sep=self.sep, header=None, names=list(range(width + 1)), usecols=usecols,
                        index_col=False, dtype=str, keep_default_na=False, na_filter=False,
                        skip_blank_lines=False, encoding="utf-8",
                    ).iloc[1:].reset_index(drop=True)
            except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
                raise DataFormatError(f"{path}: cannot parse as {self.sep!r}-separated file ({err})") from None
        line = np.arange(len(frame), dtype=np.int64) + (2 if self.header else 1)
        blank = np.all([(frame[c] == "").to_numpy() for c in usecols], axis=0) if len(frame) else np.zeros(0, bool)
        if blank.any():  # blank lines: skipped, but counted so that line numbers stay exact
            frame, line = frame[~blank].reset_index(drop=True), line[~blank]
        extra = (frame[width] != "").to_numpy()
        if extra.any():
            self.note(f"{path}: {int(extra.sum())} lines have more than the {width} fields of the first line "
                      f"(e.g. line {int(line[extra][0])}); the extra fields are ignored")
        for key in ("user", "item"):
            empty = (frame[positions[key]] == "").to_numpy()
            if empty.any():
                raise DataFormatError(
                    f"{path}, line {int(line[empty][0])}: empty {key} (column {positions[key]}; too few fields on the line?)"
                )
        if self.header:
            self._check_header(path, first, frame, positions)
        else:
            self._check_no_header(path, first, positions)
        n = len(frame)
        rating = np.full(n, np.nan)
        if "rating" in positions:
            column = frame[positions["rating"]]
            rating = to_float(column, path, str(positions["rating"]))
            empty = (column.str.strip() == "").to_numpy()
            if empty.any():
                self.note(f"{path}: {int(empty.sum())} rows have an empty rating field (e.g. line {int(line[empty][0])}); "
                          "they have no rating")
        ts = (
            to_unix_seconds(frame[positions["ts"]], path, str(positions["ts"]), self.ts_format)
            if "ts" in positions
            else np.full(n, np.nan)
        )
        return tidy_frame(frame[positions["user"]], frame[positions["item"]], rating, ts, self.domain, file=path, line=line)

    def _check_header(self, path: Path, first: list[str], frame: pd.DataFrame, positions: dict[str, int]) -> None:
        field = {k: first[pos] if pos < len(first) else "" for k, pos in positions.items()}
        if bool(first) and all(_is_number(f) for f in first):
            why = "every field is a number"
        elif "rating" in field and _is_number(field["rating"]):
            why = f"its rating field {field['rating']!r} is a number"
        elif (frame[positions["user"]] == field["user"]).any() or (frame[positions["item"]] == field["item"]).any():
            why = "its user or item occurs in the data"
        else:
            return
        self.note(f"{path}: header=true, but the first line {self.sep.join(first)!r} looks like data ({why}); "
                  "it was skipped as a header: set header: false if it is a row")

    def _check_no_header(self, path: Path, first: list[str], positions: dict[str, int]) -> None:
        for key in ("rating", "ts"):
            if key in positions and positions[key] < len(first) and first[positions[key]].strip():
                value = first[positions[key]].strip()
                if key == "rating" and not _is_number(value):
                    raise DataFormatError(
                        f"{path}, line 1: rating {value!r} is not a number; the line looks like a header "
                        f"({self.sep.join(first)!r}): set header: true"
                    )

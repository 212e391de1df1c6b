"""RecBole atomic files (``.inter``, ``.user``, ``.item``), plain or inside a zip archive.

An atomic file is a delimited text file whose first line declares ``name:type`` fields, e.g.
``user_id:token  item_id:token  rating:float  timestamp:float``. Types: ``token`` (a string
id), ``token_seq`` (space-separated tokens), ``float``, ``float_seq``. RecBole's files are
tab-separated; comma-separated ones are accepted too (the separator is detected from the header
line).
"""

from __future__ import annotations

import contextlib
import csv
import os
import warnings
import zipfile
from pathlib import Path
from typing import IO, Iterator, Optional, Union

import numpy as np
import pandas as pd

from cdrbench.data.sources._io import open_binary, read_guard, require_file, require_nonempty, to_float, to_unix_seconds
from cdrbench.data.sources.base import RawFile, Reader, tidy_frame
from cdrbench.errors import DataFileError, DataFormatError

# --------------------------------------------------------------------------- RecBole Douban

#: RecBole-CDR's Douban archive (paper footnote of HAGO); the link is reported to answer
#: "Access Denied" at times (RUCAIBox/RecBole issue #2218): place the file by hand then.
DOUBAN_ZIP_URL = "https://recbole.s3-accelerate.amazonaws.com/CrossDomain/Douban.zip"
#: published in EnkiXin/Hgformer DATASETS.md
DOUBAN_ZIP_SHA256 = "f6883d0ac6745876b92eae22977d3694993c52a83d1f039a833c083ed812551a"
DOUBAN_ZIP_SIZE = 35_496_374
#: where the archive lives under the data root
DOUBAN_ZIP_RELPATH = "douban-recbole/Douban.zip"
DOUBAN_PAGE = "https://github.com/RUCAIBox/RecBole-CDR"
#: domain key -> member of Douban.zip
DOUBAN_MEMBERS = {
    "book": "Douban/DoubanBook/DoubanBook.inter",
    "movie": "Douban/DoubanMovie/DoubanMovie.inter",
    "music": "Douban/DoubanMusic/DoubanMusic.inter",
}

ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")


# --------------------------------------------------------------------------- parsing


def _parse_header(line: Union[bytes, str], label) -> tuple[str, list[str], list[str]]:
    """``(separator, names, types)`` of an atomic header line."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            raise DataFormatError(f"{label}, line 1: header is not UTF-8 text") from None
    line = line.lstrip("\ufeff").rstrip("\r\n")
    if not line.strip():
        raise DataFormatError(f"{label}: empty file or empty header line (expected name:type fields)")
    sep = "\t" if "\t" in line else ("," if "," in line else "\t")
    names, types = [], []
    for field in line.split(sep):
        name, colon, kind = field.strip().rpartition(":")
        if not colon or not name:
            raise DataFormatError(
                f"{label}, line 1: header field {field!r} is not 'name:type' "
                f"(types: {', '.join(ATOMIC_TYPES)})"
            )
        if kind not in ATOMIC_TYPES:
            raise DataFormatError(
                f"{label}, line 1: field {name!r} has unknown type {kind!r} "
                f"(types: {', '.join(ATOMIC_TYPES)})"
            )
        names.append(name)
        types.append(kind)
    if len(set(names)) != len(names):
        raise DataFormatError(f"{label}, line 1: duplicated field names in header {names}")
    return sep, names, types


def _read_body(handle: IO, label, sep: str, names: list[str], usecols: Optional[list[str]]) -> pd.DataFrame:
    """The rows after the header, every column as str exactly as written."""
    try:
        with warnings.catch_warnings():
            # a first row with extra fields is otherwise only a warning
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                handle,
                sep=sep,
                header=None,
                names=names,
                usecols=usecols,
                index_col=False,
                dtype=str,
                quoting=csv.QUOTE_NONE,
                keep_default_na=False,
                na_filter=False,
                encoding="utf-8",
            )
    except pd.errors.EmptyDataError:
        frame = pd.DataFrame({n: pd.Series([], dtype=str) for n in (usecols or names)})
    except (pd.errors.ParserError, pd.errors.ParserWarning, UnicodeDecodeError, ValueError) as err:
        raise DataFormatError(f"{label}: cannot parse atomic file body ({err})") from None
    return frame


@contextlib.contextmanager
def _binary_source(source, label=None) -> Iterator[tuple[IO, str]]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        require_file(path)
        with open_binary(path) as handle:
            yield handle, str(path)
    else:
        yield source, label or getattr(source, "name", "<stream>")


def read_atomic_table(path_or_fileobj, label: Optional[str] = None) -> pd.DataFrame:
    """Read a whole atomic file (``.user``, ``.item``, ...) with typed columns.

    Columns are named by the field name without its type (``user_id:token`` -> ``user_id``).
    ``token`` and ``token_seq`` (and ``float_seq``) columns are ``str``, kept exactly as written
    (a ``token_seq`` is the raw space-separated string); ``float`` columns are float64 (an empty
    value is NaN). Accepts a path or an open binary/text file object positioned at the header.
    """
    with _binary_source(path_or_fileobj, label) as (handle, name):
        sep, names, types = _parse_header(handle.readline(), name)
        frame = _read_body(handle, name, sep, names, None)
    for column, kind in zip(names, types):
        if kind == "float":
            frame[column] = to_float(frame[column], name, f"{column}:float")
    return frame


def read_inter(handle: IO, label) -> pd.DataFrame:
    """Tidy columns (no domain) of an open ``.inter`` stream positioned at its header."""
    sep, names, types = _parse_header(handle.readline(), label)
    kinds = dict(zip(names, types))
    for required in ("user_id", "item_id"):
        if required not in kinds:
            raise DataFormatError(
                f"{label}, line 1: no {required!r} field in header (fields: {', '.join(names)})"
            )
    wanted = [n for n in ("user_id", "item_id", "rating", "timestamp") if n in kinds]
    frame = _read_body(handle, label, sep, names, wanted)
    for column in ("user_id", "item_id"):
        empty = (frame[column] == "").to_numpy()
        if empty.any():
            raise DataFormatError(
                f"{label}, data row {int(empty.argmax()) + 1}: empty {column} "
                "(too few fields on the line?)"
            )
    n = len(frame)
    rating = (
        to_float(frame["rating"], label, "rating")
        if "rating" in frame
        else pd.Series(float("nan"), index=range(n), dtype="float64")
    )
    ts = (
        to_unix_seconds(frame["timestamp"], label, "timestamp", "auto")
        if "timestamp" in frame
        else pd.Series(float("nan"), index=range(n), dtype="float64")
    )
    # the header is line 1 (line numbers are exact for files without blank lines)
    line = np.arange(n, dtype=np.int64) + 2
    return pd.DataFrame({"user": frame["user_id"], "item": frame["item_id"], "rating": rating, "ts": ts, "line": line})


# --------------------------------------------------------------------------- reader


class RecBoleAtomic(Reader):
    """Interactions of one RecBole atomic ``.inter`` file.

    ``user_id`` -> user, ``item_id`` -> item, ``rating`` -> rating (NaN when the file has no
    rating field), ``timestamp`` -> ts: numeric seconds, or ``YYYY-MM-DD`` dates (as in the
    Amazon 2018 ``.inter`` files, e.g. Pantry.inter) converted to Unix seconds at UTC midnight;
    anything else raises :class:`DataFormatError` naming the file, column and an example.

    ``path`` is the file under the data root, or, when ``archive`` (a zip under the data root)
    is given, the member inside the archive (``member`` overrides it). A member is read as a
    stream, never extracted. ``url``/``sha256``/``size`` describe the downloadable file (the
    archive when there is one); ``page`` is where to get it by hand.
    """

    def __init__(
        self,
        path: str,
        archive: Optional[str] = None,
        member: Optional[str] = None,
        url: Optional[str] = None,
        sha256: Optional[str] = None,
        size: Optional[int] = None,
        page: Optional[str] = None,
    ):
        self.path = path
        self.archive = archive
        self.member = member
        self.url = url
        self.sha256 = sha256
        self.size = size
        self.page = page

    def raw_file(self) -> RawFile:
        return RawFile(
            relpath=self.archive or self.path,
            url=self.url,
            sha256=self.sha256,
            size=self.size,
            page=self.page,
        )

    def raw_files(self, root: Path) -> list[RawFile]:
        return [self.raw_file()]

    def read(self, root: Path) -> pd.DataFrame:
        raw = self.raw_file()
        file_path = require_file(Path(root) / raw.relpath, raw)
        if self.archive is None:
            require_nonempty(file_path)
            with read_guard(file_path), open_binary(file_path) as handle:
                cols = read_inter(handle, str(file_path))
        else:
            member = self.member or self.path
            try:
                with zipfile.ZipFile(file_path) as archive:
                    try:
                        info = archive.getinfo(member)
                    except KeyError:
                        inter = [n for n in archive.namelist() if n.endswith(".inter")]
                        raise DataFormatError(
                            f"{file_path}: no member {member!r}; .inter members: {inter[:20]}"
                        ) from None
                    with archive.open(info) as handle:
                        cols = read_inter(handle, f"{file_path}!{member}")
            except (zipfile.BadZipFile, EOFError) as err:
                raise DataFileError(
                    f"{file_path} is not a readable zip archive ({err}); it may be truncated: "
                    "delete it and download it again."
                ) from None
        label = file_path if self.archive is None else f"{file_path}!{self.member or self.path}"
        return tidy_frame(cols["user"], cols["item"], cols["rating"], cols["ts"], self.domain, file=label, line=cols["line"])

    def describe(self) -> dict:
        params = super().describe()
        params.pop("page", None)  # where to get it by hand does not change the content
        return params


def douban(domain: str) -> RecBoleAtomic:
    """Reader for one domain (``book``, ``movie``, ``music``) of RecBole's Douban.zip."""
    if domain not in DOUBAN_MEMBERS:
        raise ValueError(f"unknown Douban domain {domain!r}; valid: {sorted(DOUBAN_MEMBERS)}")
    return RecBoleAtomic(
        path=DOUBAN_MEMBERS[domain],
        archive=DOUBAN_ZIP_RELPATH,
        url=DOUBAN_ZIP_URL,
        sha256=DOUBAN_ZIP_SHA256,
        size=DOUBAN_ZIP_SIZE,
        page=DOUBAN_PAGE,
    )


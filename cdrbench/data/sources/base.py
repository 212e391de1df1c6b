"""The contract every raw-data reader fulfils.

A reader turns the official raw files of one domain into a *tidy interaction table*:
one row per interaction, in file order, with the columns of :data:`TIDY_COLUMNS`:

========  =========  =============================================================
column    dtype      meaning
========  =========  =============================================================
user      str        raw user token, exactly as in the file
item      str        raw item token, exactly as in the file
rating    float64    explicit rating; NaN where the source has none
ts        float64    Unix seconds; NaN where the source has none
domain    object     the domain key this table belongs to (set by the reader)
========  =========  =============================================================

A reader may add ``split`` (``train`` / ``valid`` / ``test``) when the source file
already carries a split (``split.kind=given``), and ``file`` / ``line`` (the raw file and the
1-based line of each row, :data:`LOCATION_COLUMNS`) so that a bad value is reported where it is;
the prepare step drops those two after its first checks.

A reader reports a problem that does not stop the read (extra fields on some lines, a header
that looks like data) with :meth:`Reader.note`; the prepare step prints and records it.

Readers never download and never invent data. They declare the files they need through
:meth:`Reader.raw_files`; the prepare step makes sure those files are present (downloading
them when allowed and verifying their sha256) before :meth:`Reader.read` is called.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

TIDY_COLUMNS = ["user", "item", "rating", "ts", "domain"]
#: optional columns locating each row in its raw file
LOCATION_COLUMNS = ("file", "line")


@dataclass(frozen=True)
class RawFile:
    """One file a reader needs, relative to the data root.

    ``url`` is where the official file is published (``None`` when it is only obtainable by
    hand); ``sha256`` and ``size`` are checked when known.
    """

    relpath: str
    url: Optional[str] = None
    sha256: Optional[str] = None
    size: Optional[int] = None
    #: Where to get the file by hand when ``url`` is absent or dead (a page, not a file).
    page: Optional[str] = None


class Reader(abc.ABC):
    """Reads one domain of a data set into a tidy interaction table."""

    #: domain key written into the ``domain`` column; set by the prepare step.
    domain: str = ""

    @abc.abstractmethod
    def raw_files(self, root: Path) -> list[RawFile]:
        """Files this reader needs under ``root`` (may inspect ``root`` to pick a layout)."""

    @abc.abstractmethod
    def read(self, root: Path) -> pd.DataFrame:
        """Return the tidy table (columns :data:`TIDY_COLUMNS`, file order)."""

    def describe(self) -> dict:
        """Parameters that change the table's content; part of the prepare-cache key."""
        return {k: v for k, v in sorted(vars(self).items()) if not k.startswith("_")}

    def source_modules(self) -> list:
        """Modules whose source code shapes this reader's table (part of the prepare-cache key)."""
        import sys

        return [sys.modules[type(self).__module__]]

    def note(self, message: str) -> None:
        """Record a warning about the data read (printed and kept in the prepared manifest)."""
        self.__dict__.setdefault("_notes", []).append(message)

    def take_notes(self) -> list[str]:
        """The warnings recorded since the last call."""
        return self.__dict__.pop("_notes", [])


class CategoryFile(Reader):
    """A reader of one official per-category file: ``<folder>/<prefix><category><suffix>`` at
    ``url_base`` + that name. ``filename`` overrides the name (a renamed or sample file); the
    official URL is then not offered for download, since it would not be that file."""

    prefix = ""
    suffix = ""
    url_base = ""
    page: Optional[str] = None

    def __init__(self, category: str, folder: str, filename: Optional[str] = None):
        self.category = category
        self.folder = folder
        self.filename = filename

    @property
    def official_name(self) -> str:
        return f"{self.prefix}{self.category}{self.suffix}"

    def raw_file(self) -> RawFile:
        name = self.filename or self.official_name
        url = self.url_base + self.official_name if name == self.official_name else None
        return RawFile(relpath=f"{self.folder}/{name}", url=url, page=self.page)

    def raw_files(self, root: Path) -> list[RawFile]:
        return [self.raw_file()]


def tidy_frame(user, item, rating, ts, domain: str, file=None, line=None) -> pd.DataFrame:
    """Build a tidy table with the canonical dtypes from column sequences; ``file`` (one path)
    and ``line`` (1-based line numbers) add the location columns."""
    frame = pd.DataFrame(
        {
            "user": pd.Series(user).astype(str),
            "item": pd.Series(item).astype(str),
            "rating": pd.Series(rating, dtype="float64"),
            "ts": pd.Series(ts, dtype="float64"),
        }
    )
    frame["domain"] = domain
    if line is None:
        return frame[TIDY_COLUMNS]
    frame["file"] = pd.Categorical.from_codes(np.zeros(len(frame), dtype=np.int8), categories=[str(file)])
    frame["line"] = np.asarray(line, dtype=np.int64)
    return frame[TIDY_COLUMNS + list(LOCATION_COLUMNS)]

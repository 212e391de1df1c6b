"""A user's own split: train / valid / test files of one domain, read by any reader.

With ``data.split.kind=given`` the target domain's rows keep the split of the file they come
from (source domains are training data: give them their training file alone, or any plain
reader). Example (``data.domains.<d>.reader``)::

    _target_: cdrbench.data.sources.given.GivenSplit
    train: {_target_: cdrbench.data.sources.csv.DelimitedFile, path: mine/book.train.tsv, sep: "\\t"}
    valid: mine/book.valid.tsv     # a path: the train reader's settings with this file
    test: mine/book.test.tsv

``valid`` and ``test`` are either complete reader specs or, for a reader with a ``path``
argument (``DelimitedFile``, ``RecBoleAtomic``), just the path of that part.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Union

import pandas as pd

from cdrbench.data.sources.base import LOCATION_COLUMNS, TIDY_COLUMNS, RawFile, Reader
from cdrbench.errors import ConfigError

PARTS = ("train", "valid", "test")


class GivenSplit(Reader):
    """Reads the parts of a given split with their own readers and labels each row with its part.

    Args:
        train: the reader of the training rows.
        valid, test: a reader, or a path for a copy of ``train`` (readers with a ``path``), or
            ``None`` (a source domain has only training rows).
    """

    def __init__(self, train: Reader, valid: Union[Reader, str, None] = None, test: Union[Reader, str, None] = None):
        if not isinstance(train, Reader):
            raise ConfigError(f"GivenSplit.train must be a reader spec with a _target_, got {train!r}")
        self.parts: dict[str, Reader] = {"train": train}
        for name, part in (("valid", valid), ("test", test)):
            if part is None:
                continue
            if isinstance(part, str):
                if not hasattr(train, "path"):
                    raise ConfigError(
                        f"GivenSplit.{name}={part!r} is a path, but the train reader {type(train).__name__} has no "
                        f"'path' argument: give {name} as a complete reader spec"
                    )
                twin = copy.copy(train)
                twin.path = part
                part = twin
            if not isinstance(part, Reader):
                raise ConfigError(f"GivenSplit.{name} must be a reader spec or a path, got {part!r}")
            self.parts[name] = part

    def raw_files(self, root: Path) -> list[RawFile]:
        return [raw for part in self.parts.values() for raw in part.raw_files(root)]

    def read(self, root: Path) -> pd.DataFrame:
        frames = []
        for name, part in self.parts.items():
            part.domain = self.domain
            frame = part.read(root)
            frame["split"] = name
            frames.append(frame)
        out = pd.concat(frames, ignore_index=True)
        if set(LOCATION_COLUMNS) <= set(out.columns):
            out["file"] = out["file"].astype("category")
        columns = TIDY_COLUMNS + [c for c in LOCATION_COLUMNS if c in out] + ["split"]
        return out[columns]

    def describe(self) -> dict:
        return {name: {"class": type(part).__qualname__, "params": part.describe()} for name, part in self.parts.items()}

    def source_modules(self) -> list:
        return [sys.modules[__name__], *(m for part in self.parts.values() for m in part.source_modules())]

    def take_notes(self) -> list[str]:
        return [note for part in self.parts.values() for note in part.take_notes()] + super().take_notes()

"""Pre-split edge lists: the BiGNAS processed CD -> Kitchen task files."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from cdrbench.data.sources._io import open_binary, require_file
from cdrbench.data.sources.base import TIDY_COLUMNS, RawFile, Reader, tidy_frame
from cdrbench.errors import ConfigError, DataFormatError

#: role -> [(file name, split)] in reading order
ROLE_FILES = {
    "source": [("source_train_edge_index.csv", "train")],
    "target": [
        ("target_train_edge_index.csv", "train"),
        ("target_valid_edge_index.csv", "valid"),
        ("target_test_edge_index.csv", "test"),
    ],
}


def _read_edges(path: Path, label: bool = False) -> pd.DataFrame:
    try:
        with open_binary(path) as handle:
            frame = pd.read_csv(
                handle, header=None, index_col=False, dtype=str, quoting=csv.QUOTE_NONE,
                keep_default_na=False, na_filter=False,
            )
    except pd.errors.EmptyDataError:
        columns = ["user", "item", "label"] if label else ["user", "item"]
        return pd.DataFrame({c: pd.Series([], dtype=str) for c in columns})
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataFormatError(f"{path}: not a headerless user,item{',label' if label else ''} CSV ({err})") from None
    expected = 3 if label else 2
    if frame.shape[1] != expected:
        names = "user,item,label" if label else "user,item"
        raise DataFormatError(f"{path}: expected {expected} columns {names}, found {frame.shape[1]}")
    frame.columns = ["user", "item", "label"] if label else ["user", "item"]
    if label:
        bad = ~frame["label"].isin(["0", "1"]).to_numpy(dtype=bool)
        if bad.any():
            row = int(bad.argmax())
            value = frame["label"].iloc[row]
            why = "has no label (expected user,item,label)" if value == "" else f"label {value!r} is not 0 or 1"
            raise DataFormatError(f"{path}, line {row + 1}: {why}")
    for col in ("user", "item"):
        bad = ~frame[col].str.fullmatch(r"\d+").to_numpy(dtype=bool)
        if bad.any():
            row = int(bad.argmax())
            raise DataFormatError(
                f"{path}, line {row + 1}: {col} {frame[col].iloc[row]!r} is not a node id"
            )
    return frame


class EdgeIndexSplit(Reader):
    """BiGNAS processed split files (headerless ``user,item`` CSV of node ids).

    ``role="source"`` reads ``source_train_edge_index.csv`` (``split`` = ``train``);
    ``role="target"`` reads ``target_{train,valid,test}_edge_index.csv`` concatenated in that
    order with the matching ``split`` column. Tokens are the node ids as strings; these files
    carry no ratings or timestamps (NaN).

    ``label=True``: every file has a third column, the click label (0 or 1), e.g. the split that
    ``scripts/bignas_refsplit_convert.py`` writes from the authors' processed data. The label is
    stored as the row's rating (0.0 / 1.0), so ``data.label_threshold: 0.5`` makes it the click
    label ``y``.
    """

    def __init__(self, role: str, folder: str = "bignas-cd-kitchen-split", label: bool = False):
        if role not in ROLE_FILES:
            raise ConfigError(f"EdgeIndexSplit.role must be one of {sorted(ROLE_FILES)}, got {role!r}")
        self.role = role
        self.folder = folder
        self.label = bool(label)

    def raw_files(self, root: Path) -> list[RawFile]:
        return [RawFile(f"{self.folder}/{name}") for name, _ in ROLE_FILES[self.role]]

    def read(self, root: Path) -> pd.DataFrame:
        parts, splits = [], []
        for raw, (_, split) in zip(self.raw_files(root), ROLE_FILES[self.role]):
            frame = _read_edges(require_file(Path(root) / raw.relpath, raw), self.label)
            parts.append(frame)
            splits.append(np.full(len(frame), split, dtype=object))
        edges = pd.concat(parts, ignore_index=True)
        n = len(edges)
        rating = edges["label"].astype(float).to_numpy() if self.label else np.full(n, np.nan)
        out = tidy_frame(edges["user"], edges["item"], rating, np.full(n, np.nan), self.domain)
        out["split"] = pd.Series(np.concatenate(splits), dtype=str)
        return out[TIDY_COLUMNS + ["split"]]

"""Helpers shared by the raw-file readers: opening, JSON-lines parsing, column conversion."""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import re
import zlib
from pathlib import Path
from typing import BinaryIO, Optional, Sequence

import numpy as np
import pandas as pd

from cdrbench.data.sources.base import RawFile
from cdrbench.errors import DataFileError, DataFormatError

GZIP_MAGIC = b"\x1f\x8b"


# --------------------------------------------------------------------------- files


def is_gzip(path: Path) -> bool:
    """True when the file starts with the gzip magic bytes (the name does not matter)."""
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def open_binary(path: Path) -> BinaryIO:
    """Open a file for binary reading, transparently decompressing gzip (detected by magic)."""
    if is_gzip(path):
        return gzip.open(path, "rb")
    return open(path, "rb")


def require_file(path: Path, raw: Optional[RawFile] = None) -> Path:
    """Return ``path`` if it is a file, else the same error the prepare step would give."""
    if path.is_file():
        return path
    from cdrbench.data.download import missing_file_error

    raise missing_file_error(raw or RawFile(relpath=str(path)), path)


def gzip_problem(path: Path) -> Optional[str]:
    """Why a file with the gzip magic does not decompress completely (``None`` when it does, or
    when it is not gzip). Streams the whole file: called only once a read has failed."""
    if not is_gzip(path):
        return None
    try:
        with gzip.open(path, "rb") as handle:
            while handle.read(1 << 20):
                pass
    except (OSError, EOFError, zlib.error) as err:
        return str(err) or type(err).__name__
    return None


def corrupt_gzip_error(path: Path, reason: str) -> DataFileError:
    return DataFileError(
        f"{path} is not a valid gzip file ({reason}): it is truncated or corrupt. "
        "Delete it and download it again (or replace it by hand)."
    )


@contextlib.contextmanager
def read_guard(path: Path):
    """Around a parse of ``path``: a failure caused by a corrupt gzip stream (which often
    surfaces as garbage text, a parse or a UTF-8 error) is reported as a corrupt file."""
    try:
        yield
    except (OSError, EOFError, zlib.error, DataFormatError, ValueError) as err:
        reason = gzip_problem(path)
        if reason is not None:
            raise corrupt_gzip_error(path, reason) from None
        if isinstance(err, (EOFError, zlib.error)) or (isinstance(err, OSError) and not isinstance(err, FileNotFoundError)):
            raise DataFileError(f"{path} cannot be read: {err}") from None
        raise


def require_nonempty(path: Path) -> Path:
    """``path`` unless it holds no data at all (0 bytes, or a gzip stream of 0 bytes)."""
    empty = path.stat().st_size == 0
    if not empty and is_gzip(path):
        with read_guard(path), gzip.open(path, "rb") as handle:
            empty = not handle.read(1)
    if empty:
        raise DataFormatError(f"{path}: the file is empty (no rows)")
    return path


# --------------------------------------------------------------------------- JSON lines

#: (json key, kind) where kind is "str" (a JSON string) or "num" (a JSON number)
JsonField = tuple[str, str]


def _arrow_json(path: Path, fields: Sequence[JsonField], block_size: int):
    """Fast path: pyarrow's multithreaded JSON reader over a (gzip) stream, batch by batch.

    Returns ``{key: pyarrow.ChunkedArray}`` or ``None`` when the file needs the strict Python scan
    (a parse error, a missing/null field, a non-finite number, invalid UTF-8): that scan then
    either names the bad line or, if the file is fine after all, produces the result.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    schema = pa.schema(
        [(key, pa.string() if kind == "str" else pa.float64()) for key, kind in fields]
    )
    read_options = pj.ReadOptions(block_size=block_size, use_threads=True)
    parse_options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    chunks: dict[str, list] = {key: [] for key, _ in fields}
    try:
        with pa.input_stream(str(path), compression="gzip" if is_gzip(path) else None) as src:
            reader = pj.open_json(src, read_options=read_options, parse_options=parse_options)
            for batch in reader:
                for key, kind in fields:
                    column = batch.column(key)
                    if column.null_count:
                        return None
                    if kind == "num" and len(column) and not pc.all(pc.is_finite(column)).as_py():
                        return None
                    chunks[key].append(column)
    except (pa.ArrowInvalid, pa.ArrowException, OSError, ValueError):
        return None
    out = {}
    for key, kind in fields:
        # chunked, not concatenated: one string array is limited to 2 GiB of characters
        array = pa.chunked_array(chunks[key], type=schema.field(key).type)
        if kind == "str":
            try:
                array.validate(full=True)  # pyarrow's JSON reader does not check UTF-8
            except pa.ArrowInvalid:
                return None
        out[key] = array
    return out


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _python_json(path: Path, fields: Sequence[JsonField]) -> dict[str, list]:
    """Strict line-by-line scan; raises DataFormatError naming the file and 1-based line."""
    out: dict[str, list] = {key: [] for key, _ in fields}
    lineno = 0
    try:
        with open_binary(path) as handle:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line, parse_constant=_reject_constant)
                except json.JSONDecodeError as err:
                    raise DataFormatError(
                        f"{path}, line {lineno}: malformed JSON ({err.msg} at column {err.colno})"
                    ) from None
                except (ValueError, UnicodeDecodeError) as err:
                    raise DataFormatError(f"{path}, line {lineno}: malformed JSON ({err})") from None
                if not isinstance(obj, dict):
                    raise DataFormatError(
                        f"{path}, line {lineno}: expected a JSON object, got {type(obj).__name__}"
                    )
                for key, kind in fields:
                    value = obj.get(key)
                    if value is None:
                        raise DataFormatError(f"{path}, line {lineno}: missing field {key!r}")
                    if kind == "str":
                        if not isinstance(value, str):
                            raise DataFormatError(
                                f"{path}, line {lineno}: field {key!r} must be a string, got {value!r}"
                            )
                    else:
                        if isinstance(value, bool) or not isinstance(value, (int, float)):
                            raise DataFormatError(
                                f"{path}, line {lineno}: field {key!r} must be a number, got {value!r}"
                            )
                        value = float(value)
                        if not math.isfinite(value):
                            raise DataFormatError(
                                f"{path}, line {lineno}: field {key!r} is not finite ({value!r})"
                            )
                    out[key].append(value)
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataFileError(
            f"{path} is corrupt or truncated (after line {lineno}): {err}. "
            "Delete it and download it again."
        ) from None
    return out


def read_json_lines(
    path: Path, fields: Sequence[JsonField], block_size: int = 8 << 20
) -> dict[str, "pd.Series"]:
    """Read the given fields of a JSON-lines file (plain or gzip) as pandas Series.

    Every non-blank line must be one strict JSON object holding all ``fields`` with the right
    kind; other keys are ignored. Memory is bounded by the output columns plus a few blocks of
    input: neither the decompressed file nor all lines as dicts are ever held.
    """
    with read_guard(path):
        arrays = _arrow_json(path, fields, block_size)
        if arrays is not None:
            return {key: arrays[key].to_pandas() for key, _ in fields}
        columns = _python_json(path, fields)
    return {
        key: pd.Series(columns[key], dtype="float64" if kind == "num" else object)
        for key, kind in fields
    }


# --------------------------------------------------------------------------- columns

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _example(values: pd.Series, bad: np.ndarray) -> str:
    idx = np.flatnonzero(bad)
    return repr(values.iloc[int(idx[0])]) if len(idx) else "?"


def to_float(values: pd.Series, file, column: str, allow_empty: bool = True) -> np.ndarray:
    """String column -> float64; empty strings become NaN (if allowed); anything else errors."""
    stripped = values.astype(str).str.strip()
    empty = (stripped == "").to_numpy()
    parsed = pd.to_numeric(stripped.where(~empty, None), errors="coerce").to_numpy(dtype="float64")
    bad = np.isnan(parsed) & ~empty
    # "nan"/"NaN" literals are not numbers we accept
    if bad.any() or (empty.any() and not allow_empty):
        if not bad.any():
            bad = empty
        raise DataFormatError(
            f"{file}: column {column!r} holds a non-numeric value, e.g. {_example(values, bad)}"
        )
    return parsed


def to_unix_seconds(values: pd.Series, file, column: str, ts_format: Optional[str] = None) -> np.ndarray:
    """Timestamp strings -> float64 Unix seconds.

    ``ts_format`` ``None``/``"unix"``: numeric seconds; ``"auto"``: numeric seconds, or
    ``YYYY-MM-DD`` dates (UTC midnight) when every value is such a date; any other string is a
    strftime pattern (naive times are taken as UTC). Empty strings become NaN. A value that
    does not parse raises :class:`DataFormatError` naming the file, the column and an example.
    """
    text = values.astype(str).str.strip()
    empty = (text == "").to_numpy()
    pattern = ts_format
    if ts_format == "auto":
        # dates first: coercing a column of dates to numbers is slow (one exception per value)
        is_date = text.str.fullmatch(_DATE_RE.pattern).to_numpy(dtype=bool)
        pattern = None
        if is_date.any():
            bad = ~is_date & ~empty
            if bad.any():
                raise DataFormatError(
                    f"{file}: column {column!r} mixes YYYY-MM-DD dates with other values, "
                    f"e.g. {_example(values, bad)}"
                )
            pattern = "%Y-%m-%d"
    if pattern in (None, "unix"):
        parsed = pd.to_numeric(text.where(~empty, None), errors="coerce").to_numpy(dtype="float64")
        bad = np.isnan(parsed) & ~empty
        if bad.any():
            what = "neither Unix seconds nor YYYY-MM-DD dates" if ts_format == "auto" else "not numeric Unix seconds"
            raise DataFormatError(f"{file}: column {column!r} holds {what}, e.g. {_example(values, bad)}")
        return parsed
    try:
        stamps = pd.to_datetime(text.where(~empty, None), format=pattern, utc=True, errors="coerce")
    except ValueError as err:
        raise DataFormatError(f"{file}: bad timestamp format {pattern!r} for column {column!r}: {err}") from None
    bad = stamps.isna().to_numpy() & ~empty
    if bad.any():
        raise DataFormatError(
            f"{file}: column {column!r} does not match the timestamp format {pattern!r}, "
            f"e.g. {_example(values, bad)}"
        )
    seconds = (stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    return seconds.to_numpy(dtype="float64", na_value=np.nan)

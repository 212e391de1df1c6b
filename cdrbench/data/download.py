"""Make sure the raw files a reader declares are present and intact.

:func:`ensure_files` is the only code in cdrbench that touches the network. For every
:class:`~cdrbench.data.sources.base.RawFile`:

* present at ``root/relpath``: its size and sha256 are checked when the ``RawFile`` declares
  them. A mismatch raises :class:`~cdrbench.errors.DataFileError` with the expected and actual
  values. A file found on disk (placed by hand, or downloaded earlier) is never deleted.
* absent, ``download`` true and a ``url`` known: the file is streamed to ``<path>.part``,
  hashed while it arrives, checked, and only then renamed to its final name with
  :func:`os.replace`. On any failure (network, size, checksum, Ctrl-C) the ``.part`` file is
  removed, so nothing half-written is ever left under the final name.
* absent otherwise: :class:`~cdrbench.errors.DataFileError` naming the absolute path, the URL
  (or the page to get the file from) and the two ways out: place it by hand, or set
  ``data.download=true``.

Hashing a multi-GB file takes many seconds, so an optional JSON *hash cache* maps an absolute
path to ``[size, mtime_ns, sha256]``; a file is re-hashed only when its size or mtime changed.
The cache lives wherever the caller says (typically next to the prepared-data cache), never next
to the data files: data roots may be read-only and shared. The only thing this module ever
writes under the data root is the downloaded file itself (and its transient ``.part``).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from cdrbench.data.sources.base import RawFile
from cdrbench.errors import DataFileError

__all__ = ["ensure_files", "sha256_file", "missing_file_error", "load_hash_cache"]

_CHUNK = 1 << 20
_USER_AGENT = "cdrbench (+https://pypi.org/project/cdrbench/)"
_TIMEOUT_S = 60.0


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes (streamed; constant memory)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _source_hint(raw: RawFile) -> str:
    if raw.url and raw.page:
        return f"URL: {raw.url} (see also {raw.page})"
    if raw.url:
        return f"URL: {raw.url}"
    if raw.page:
        return f"no direct download URL is known; get it from {raw.page}"
    return "no download URL is known for it"


def missing_file_error(raw: RawFile, path: Path) -> DataFileError:
    """The error for a raw file that is absent and cannot (or may not) be downloaded."""
    lines = [f"Missing data file: {path}", f"  {_source_hint(raw)}"]
    if raw.url:
        lines.append(
            "  Place the file there by hand, or set data.download=true to let cdrbench download it."
        )
    else:
        lines.append(
            "  Place the file there by hand (data.download=true cannot fetch it: no URL is known)."
        )
    return DataFileError("\n".join(lines))


def _mismatch_error(raw: RawFile, path: Path, what: str, expected, actual, downloaded: bool) -> DataFileError:
    if downloaded:
        tail = f"The download from {raw.url} was discarded; nothing was written to {path}."
    else:
        tail = (
            "The file was left in place; replace it with the official file "
            f"({_source_hint(raw)}), or delete it and set data.download=true."
        )
    return DataFileError(
        f"{what} mismatch for data file {path}: expected {expected}, actual {actual}. {tail}"
    )


# --------------------------------------------------------------------------- hash cache


def load_hash_cache(hash_cache: Optional[Path]) -> dict[str, list]:
    """Read the hash cache; a missing or unreadable cache is an empty one."""
    if hash_cache is None:
        return {}
    try:
        with open(hash_cache, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        k: v
        for k, v in data.items()
        if isinstance(v, list) and len(v) == 3 and isinstance(v[2], str)
    }


def _write_hash_cache(hash_cache: Path, updates: dict[str, list]) -> None:
    """Merge ``updates`` into the on-disk cache and write it atomically (temp + os.replace)."""
    merged = load_hash_cache(hash_cache)  # re-read: another run may have added entries
    merged.update(updates)
    hash_cache.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=hash_cache.name + ".", suffix=".tmp", dir=hash_cache.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(merged, handle, indent=1, sort_keys=True)
        os.replace(tmp, hash_cache)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _cached_sha256(path: Path, stat: os.stat_result, cache: dict, updates: dict) -> str:
    key = str(path)
    entry = cache.get(key)
    if entry is not None and entry[0] == stat.st_size and entry[1] == stat.st_mtime_ns:
        return entry[2]
    digest = sha256_file(path)
    cache[key] = updates[key] = [stat.st_size, stat.st_mtime_ns, digest]
    return digest


# --------------------------------------------------------------------------- download


def _progress_enabled(progress: bool) -> bool:
    if not progress:
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _download(raw: RawFile, path: Path, progress: bool) -> str:
    """Stream ``raw.url`` to ``path`` via ``<path>.part``; return the verified sha256."""
    from tqdm.auto import tqdm

    part = path.with_name(path.name + ".part")
    hasher = hashlib.sha256()
    received = 0
    done = False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        request = urllib.request.Request(raw.url, headers={"User-Agent": _USER_AGENT})
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response, open(part, "wb") as out:
            length = response.headers.get("Content-Length")
            announced = int(length) if length and length.isdigit() else None
            with tqdm(
                total=announced if announced is not None else raw.size,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=f"download {raw.relpath}",
                disable=not _progress_enabled(progress),
                leave=False,
            ) as bar:
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    hasher.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if announced is not None and received != announced:
            raise DataFileError(
                f"Download of {raw.url} to {path} was truncated: the server announced "
                f"{announced} bytes, {received} arrived. Retry, or place the file there by hand "
                f"({_source_hint(raw)})."
            )
        if raw.size is not None and received != raw.size:
            raise _mismatch_error(raw, path, "Size", f"{raw.size} bytes", f"{received} bytes", True)
        digest = hasher.hexdigest()
        if raw.sha256 is not None and digest != raw.sha256.lower():
            raise _mismatch_error(raw, path, "sha256", raw.sha256.lower(), digest, True)
        os.replace(part, path)
        done = True
        return digest
    except DataFileError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
        raise DataFileError(
            f"Could not download data file {path}\n"
            f"  from {raw.url}: {err}\n"
            f"  {_source_hint(raw)}\n"
            "  Place the file there by hand, or check the network and retry with data.download=true."
        ) from err
    finally:
        if not done:
            try:
                part.unlink()
            except FileNotFoundError:
                pass
            except OSError:
                pass


# --------------------------------------------------------------------------- entry point


def ensure_files(
    files: list[RawFile],
    root: Path,
    download: bool,
    hash_cache: Optional[Path] = None,
    progress: bool = True,
) -> dict[str, str]:
    """Make every file of ``files`` present and verified under ``root``.

    Returns ``{relpath: sha256}`` for all of them (to record in the prepared-data manifest).
    Raises :class:`~cdrbench.errors.DataFileError` for a missing file that cannot be
    downloaded, a failed download, or a size / sha256 mismatch (message: path, expected and
    actual values). ``hash_cache`` (optional) is a JSON file outside the data root that lets a
    later call skip re-hashing unchanged files.
    """
    root = Path(os.path.expandvars(str(root))).expanduser().absolute()
    cache = load_hash_cache(hash_cache)
    updates: dict[str, list] = {}
    digests: dict[str, str] = {}
    try:
        for raw in files:
            path = root / raw.relpath
            if path.exists():
                if not path.is_file():
                    raise DataFileError(f"Data path {path} exists but is not a regular file.")
                stat = path.stat()
                if raw.size is not None and stat.st_size != raw.size:
                    raise _mismatch_error(
                        raw, path, "Size", f"{raw.size} bytes", f"{stat.st_size} bytes", False
                    )
                digest = _cached_sha256(path, stat, cache, updates)
                if raw.sha256 is not None and digest != raw.sha256.lower():
                    raise _mismatch_error(raw, path, "sha256", raw.sha256.lower(), digest, False)
            elif download and raw.url:
                digest = _download(raw, path, progress)
                stat = path.stat()
                cache[str(path)] = updates[str(path)] = [stat.st_size, stat.st_mtime_ns, digest]
            else:
                raise missing_file_error(raw, path)
            digests[raw.relpath] = digest
    finally:
        if hash_cache is not None and updates:
            try:
                _write_hash_cache(Path(hash_cache), updates)
            except OSError:
                pass  # the cache is an optimisation; never fail a run because of it
    return digests

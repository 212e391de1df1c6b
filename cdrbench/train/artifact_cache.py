"""A content-hashed cache of pre-trained weights, shared by every method with a pre-training stage.

HAGO caches its pre-trained embedding tables, PCRec its pre-trained GIN encoder. The key is the
sha256 of a canonical JSON of *everything that determines the weights*: the prepared data's cache
key (which already hashes the raw files, every preprocessing option and the preparation code),
the method's name, every pre-training option and the seed. Two rules the authors' caches break
and this one keeps:

* **no stale hits** — any changed option, seed or data gives another key (the caller passes all
  of them; :func:`artifact_key` refuses values that have no canonical JSON form);
* **strict, safe loading** — entries are ``torch.save`` state dicts loaded with
  ``weights_only=True``; the caller loads them into its modules with ``strict=True``.

An entry is a directory ``<root>/<namespace>/<key>/`` holding ``state.pt`` and ``meta.json``. It
is written into a temporary sibling directory and renamed into place, ``meta.json`` last, so a
crash mid-write leaves nothing that looks complete; an entry without ``meta.json`` or whose
``state.pt`` cannot be read is treated as a miss and replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from cdrbench.train.runtime import file_mode

STATE = "state.pt"
META = "meta.json"


def default_artifact_root() -> Path:
    """``$XDG_CACHE_HOME/cdrbench/artifacts`` (default ``~/.cache/cdrbench/artifacts``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cdrbench" / "artifacts"


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"artifact key part {value!r} ({type(value).__name__}) has no canonical JSON form")


def _non_finite(state, prefix: str = "") -> Optional[str]:
    """The first entry of a (nested) state that holds a NaN or an infinity, else None."""
    if isinstance(state, torch.Tensor):
        return prefix or "state" if state.is_floating_point() and not bool(torch.isfinite(state).all()) else None
    if isinstance(state, dict):
        items = state.items()
    elif isinstance(state, (list, tuple)):
        items = enumerate(state)
    else:
        return None
    for name, value in items:
        found = _non_finite(value, f"{prefix}.{name}" if prefix else str(name))
        if found:
            return found
    return None


def artifact_key(parts: dict) -> str:
    """sha256 (first 20 hex digits) of the canonical JSON of ``parts`` (order-independent)."""
    blob = json.dumps(_canonical(parts), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


class ArtifactCache:
    """Pre-trained states under content-hash keys (see the module docstring).

    Args:
        root: cache directory (created on first write); ``None`` = :func:`default_artifact_root`.
        log: where hit/miss lines go.
    """

    def __init__(self, root: Optional[Path | str] = None, log: Callable[[str], None] = print):
        self.root = Path(root).expanduser() if root is not None else default_artifact_root()
        self.log = log

    def entry(self, namespace: str, key: str) -> Path:
        return self.root / namespace / key

    def load(self, namespace: str, parts: dict) -> Optional[dict]:
        """The cached state for ``parts``, or ``None`` on a miss (absent, incomplete or unreadable)."""
        key = artifact_key(parts)
        path = self.entry(namespace, key)
        if not (path / META).is_file():
            return None
        try:
            state = torch.load(path / STATE, map_location="cpu", weights_only=True)
            stored = json.loads((path / META).read_text())
        except Exception as error:  # a torn or foreign file is a miss, rebuilt by the caller
            self.log(f"artifact cache: {path} is unreadable ({type(error).__name__}); recomputing")
            return None
        if stored.get("parts") != _canonical(parts):  # a hash collision or a hand-edited entry
            self.log(f"artifact cache: {path} was written for other options; recomputing")
            return None
        self.log(f"artifact cache: hit {namespace}/{key}")
        return state

    def save(self, namespace: str, parts: dict, state: dict, info: Optional[dict] = None) -> Optional[Path]:
        """Store ``state`` atomically (replacing an incomplete entry); returns the entry path, or
        None when ``state`` holds a non-finite value: weights of a diverged run are never cached,
        so a later run with the same key trains again instead of inheriting NaNs."""
        key = artifact_key(parts)
        bad = _non_finite(state)
        if bad:
            self.log(f"artifact cache: not storing {namespace}/{key}: non-finite values in {bad}")
            return None
        final = self.entry(namespace, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
        try:
            os.chmod(tmp, file_mode(directory=True))  # readable like any cache, not mkdtemp's 0700
            torch.save(state, tmp / STATE)
            meta = {"namespace": namespace, "key": key, "parts": _canonical(parts), "created": time.time(), **(info or {})}
            (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
            if final.exists():  # incomplete or unreadable (a complete one would have been a hit)
                shutil.rmtree(final, ignore_errors=True)
            try:
                os.replace(tmp, final)
            except OSError:  # another process finished the same entry first: keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.log(f"artifact cache: stored {namespace}/{key}")
        return final
